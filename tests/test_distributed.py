"""The data-parallel pieces (distributed.py): in one process each is the identity or a no-op; in two gloo
processes on the loopback (a file store, no ports, as CI can run them) each gives every process the whole step."""

import pytest
import torch

from edgerlhf.distributed import (
    any_process,
    broadcast_object,
    broadcast_params,
    divisible,
    gather_objects,
    gather_rows,
    item_seed,
    reduce_max,
    reduce_sum,
    shard,
    sync_gradients,
    world,
)


def test_one_process_is_the_identity():
    assert world() == (0, 1)
    t = torch.arange(6.0).view(3, 2)
    assert gather_rows(t) is t and gather_rows(None) is None
    assert gather_objects(["a", "b"]) == ["a", "b"]
    assert torch.equal(reduce_sum(t), t) and torch.equal(reduce_max(t), t)
    assert any_process(True) and not any_process(False)
    assert broadcast_object({"x": 1}) == {"x": 1}
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    sync_gradients([p], scale=0.5)  # nothing to sum with: untouched
    assert torch.equal(p.grad, torch.full((3,), 2.0))


def test_shards_partition_the_step_and_counts_name_the_fix():
    items = list(range(12))
    assert sum((shard(items, r, 3) for r in range(3)), []) == items  # the same step's batch at any world size
    assert shard(items, 0, 1) == items
    with pytest.raises(ValueError, match="multiple of 5"):
        shard(items, 0, 5)
    with pytest.raises(ValueError, match="rank 2 is not in a world of 2"):
        shard(items, 2, 2)
    assert divisible({"num_rollouts_per_step": 32, "mini_batch_size x gradient_accumulation_steps": 8}, 4) == []
    errs = divisible({"num_rollouts_per_step": 30, "x": 2}, 4)
    assert len(errs) == 2
    assert "num_rollouts_per_step=30 does not divide among 4 processes" in errs[0] and "28 or 32" in errs[0]
    assert "x=2" in errs[1] and "e.g. 4" in errs[1]


def test_item_seeds_depend_on_the_position_only():
    seeds = {item_seed(42, s, i, k) for s in range(3) for i in range(0, 64, 8) for k in range(3)}
    assert len(seeds) == 3 * 8 * 3  # no two positions (or streams) share a seed
    assert item_seed(42, 1, 8) == item_seed(42, 1, 8) != item_seed(43, 1, 8)
    assert all(0 <= s < 2**63 for s in seeds)


def _worker(rank, world_size, store, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        rows = torch.arange(4.0).view(2, 2) + 10 * rank  # this process's 2 rows
        ended = torch.tensor([rank == 0, True])
        a = torch.nn.Parameter(torch.zeros(3))
        b = torch.nn.Parameter(torch.zeros(2))
        frozen = torch.nn.Parameter(torch.zeros(2), requires_grad=False)
        a.grad = torch.full((3,), float(rank + 1))  # b has no gradient on rank 1
        if rank == 0:
            b.grad = torch.tensor([4.0, 6.0])
        sync_gradients([a, b, frozen], scale=0.5)
        w = torch.nn.Parameter(torch.full((2,), float(rank)))
        broadcast_params([w])
        try:  # a bug that gathers different shapes: an error on every process, never gloo's abort of the receiver
            gather_rows(torch.zeros(2, 3 + rank))
            mismatch = "no error"
        except RuntimeError as e:
            mismatch = str(e)
        try:  # and a sum of rows whose lengths differ (e.g. metric names one process lacks): no silent garbage
            reduce_sum(torch.zeros(2 + rank, dtype=torch.float64))
            mismatch_sum = "no error"
        except RuntimeError as e:
            mismatch_sum = str(e)
        torch.save({"world": world(), "rows": gather_rows(rows), "ended": gather_rows(ended),
                    "objs": gather_objects([f"r{rank}"]), "sum": reduce_sum(torch.tensor([rank + 1.0])),
                    "max": reduce_max(torch.tensor([rank])), "any": any_process(rank == 1),
                    "none": any_process(False), "obj": broadcast_object(f"from {rank}"),
                    "a": a.grad, "b": b.grad, "frozen": frozen.grad, "w": w.detach(), "mismatch": mismatch,
                    "mismatch_sum": mismatch_sum,
                    "after": gather_rows(torch.tensor([rank]))}, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_see_the_whole_step(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    got = [torch.load(tmp_path / f"{r}.pt") for r in range(2)]
    assert [g["world"] for g in got] == [(0, 2), (1, 2)]
    for g in got:  # every process holds the same, whole-step values
        assert torch.equal(g["rows"], torch.tensor([[0.0, 1.0], [2.0, 3.0], [10.0, 11.0], [12.0, 13.0]]))
        assert g["ended"].tolist() == [True, True, False, True] and g["ended"].dtype == torch.bool
        assert g["objs"] == ["r0", "r1"]
        assert g["sum"].item() == 3.0 and g["max"].item() == 1 and g["any"] and not g["none"]
        assert g["obj"] == "from 0"
        assert torch.equal(g["a"], torch.full((3,), 1.5))  # (1 + 2) x 0.5
        assert torch.equal(g["b"], torch.tensor([2.0, 3.0]))  # rank 1's missing gradient counted as zero
        assert g["frozen"] is None  # frozen parameters take no part
        assert torch.equal(g["w"], torch.zeros(2))  # rank 0's values everywhere
        assert "differ (a bug" in g["mismatch"] and "rank 0: float32 (2, 3), rank 1: float32 (2, 4)" in g["mismatch"]
        assert "rank 0: float64 (2,), rank 1: float64 (3,)" in g["mismatch_sum"]
        assert g["after"].tolist() == [0, 1]  # and the processes still agree on what comes next
