"""Data-parallel statistics and sharding: the same numbers at any world size (one process here, two gloo
processes on the loopback through a file store, as CI can run them)."""

import pytest
import torch

from edgerlhf.rl.distributed import global_count, global_whiten, rank_seed, shard, world
from edgerlhf.rl.ppo_math import whiten


def _batch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 6, generator=g) * 3 + 1
    mask = (torch.rand(8, 6, generator=g) > 0.3).float()
    return x, mask


def test_one_process_is_the_plain_whitening():
    x, mask = _batch()
    assert world() == (0, 1)
    for shift in (True, False):
        assert torch.allclose(global_whiten(x, mask, shift_mean=shift), whiten(x, mask, shift_mean=shift), atol=1e-6)
    assert global_count(mask) == mask.sum()
    with pytest.raises(ValueError, match="at least 2 unmasked"):
        global_whiten(x, torch.zeros_like(mask))


def test_shards_partition_the_step_and_name_the_fix():
    items = list(range(12))
    assert sum((shard(items, r, 3) for r in range(3)), []) == items  # the same step's batch at any world size
    assert shard(items, 0, 1) == items
    with pytest.raises(ValueError, match="multiple of 5"):
        shard(items, 0, 5)
    with pytest.raises(ValueError, match="rank 2 is not in a world of 2"):
        shard(items, 2, 2)
    assert rank_seed(42, 0) == 42 and len({rank_seed(42, r) for r in range(4)}) == 4


def _worker(rank, world_size, store, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        x, mask = _batch()
        rows = shard(list(range(x.shape[0])), rank, world_size)
        mine = global_whiten(x[rows], mask[rows])
        torch.save({"rows": rows, "whitened": mine, "count": global_count(mask[rows]), "world": world()},
                   f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_whiten_like_one(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    x, mask = _batch()
    full = whiten(x, mask)
    parts = [torch.load(tmp_path / f"{r}.pt") for r in range(2)]
    assert [p["world"] for p in parts] == [(0, 2), (1, 2)]
    got = torch.cat([p["whitened"] for p in parts])
    assert sum((p["rows"] for p in parts), []) == list(range(8))
    assert torch.allclose(got, full, atol=1e-6)  # each rank's rows of the single-process result
    assert all(p["count"] == mask.sum() for p in parts)
