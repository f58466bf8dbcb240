"""Data parallelism (issue 16): one process per device, launched by ``torchrun`` or ``accelerate launch``, each
holding its own copy of every frozen model (base, reference, reward model, at their precisions) and of the
trainable parameters (LoRA, value head), which stay identical because every process applies the same summed
gradient.

The rule that keeps results independent of the world size: **what a step computes is decided by the step, not by
the process**. A step's items (episodes, rows) are the same list at any world size and each process takes a
contiguous share of it (:func:`shard`); statistics that span the step (whitening, group baselines, token counts)
are computed from the whole step's tensors gathered to every process (:func:`gather_rows`, a few KB per step);
random draws are seeded by (run seed, step, item index) (:func:`item_seed`), not by the process's rank.

Why a summed all-reduce of the trainable gradients (:func:`sync_gradients`) rather than wrapping a module in
``torch.nn.parallel.DistributedDataParallel``: the same arithmetic (DDP averages the gradients of its buckets), but
EdgeRLHF's forwards do not go through one module's ``forward`` (one base serves policy, reference and values with
adapters toggled and a cached trunk; DPO and the RM run a shared prompt once and its two continuations), a process
may halve its micro-batch on CUDA OOM and so run a different number of backwards than the others, and the value head
is not used by every forward: DDP's reducer hooks need one wrapped forward per backward and every parameter used
(or ``find_unused_parameters``). The gradients synchronised are LoRA's and the value head's, a few MB, once per
optimizer step, so DDP's overlap of communication with the backward would save nothing measurable.
"""

from __future__ import annotations

import atexit
import faulthandler
import os
from collections.abc import Sequence
from datetime import timedelta

import torch
import torch.distributed as dist

_BUCKET = 25 * 2**20  # elements per all-reduce bucket (DDP's default bucket is 25 MB)


class LaunchError(RuntimeError):
    """A data-parallel launch that cannot work as set up; the message names the fix."""


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) when none is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def launched_world_size() -> int:
    """The world size ``torchrun`` / ``accelerate launch`` announced in the environment (1 when not launched)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def require_one_process(what: str, parallel: Sequence[str] = ()) -> None:
    """Stop a command that runs in one process when a launcher started several (each would repeat the work and
    write the same folders); ``parallel`` names the commands that do run data-parallel."""
    n = max(launched_world_size(), world()[1])
    if n > 1:
        also = f"; the data-parallel stages are {', '.join(parallel)}" if parallel else ""
        raise LaunchError(f"{what} runs in one process, but {n} were launched (torchrun / accelerate launch): run it "
                           f"without the launcher{also}")


def init_from_env(device: str = "auto") -> tuple[int, int]:
    """Join the process group a launcher set up (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``,
    ``MASTER_PORT`` in the environment); nothing in a plain single process or when a group exists already (the
    Python API, tests). NCCL when the processes use GPUs, else gloo. Returns (rank, world size)."""
    if dist.is_initialized() or launched_world_size() <= 1:
        return world()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    gpu = torch.cuda.is_available() and device != "cpu"
    if gpu:
        if local >= torch.cuda.device_count():
            raise LaunchError(f"LOCAL_RANK={local} but this node has {torch.cuda.device_count()} visible GPUs: launch "
                              "at "
                               "most one process per GPU (--nproc_per_node / --num_processes)")
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if gpu else "gloo", timeout=timedelta(minutes=30))
    atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    # a process killed by a fatal signal (a C++ abort in a collective, a segfault in a kernel) prints every thread's
    # Python stack to its stderr: the launcher itself reports only "exitcode -6" for it
    if not faulthandler.is_enabled():
        faulthandler.enable(all_threads=True)
    return world()


def local_device(device: str) -> torch.device | None:
    """The device of this process under a launcher: ``cuda:LOCAL_RANK`` for ``auto`` / ``cuda``; an error for one
    fixed GPU, which every process would share; None outside a launched group (the caller decides)."""
    if world()[1] <= 1 or not torch.cuda.is_available() or device == "cpu":
        return None
    if device not in ("auto", "cuda"):
        raise LaunchError(f"device={device!r} puts all {world()[1]} processes on one GPU; with torchrun / accelerate "
                           "launch use device=auto (each process takes the GPU of its LOCAL_RANK)")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))


def divisible(what: dict[str, int], world_size: int) -> list[str]:
    """Errors for the per-step counts that must split evenly among the processes, each naming the fix."""
    errs = []
    for key, n in what.items():
        if n % world_size:
            lo, hi = n // world_size * world_size, (n // world_size + 1) * world_size
            alt = f"{lo} or {hi}" if lo else f"{hi}"
            errs.append(f"{key}={n} does not divide among {world_size} processes: make it a multiple of {world_size} "
                        f"(e.g. {alt}), or launch a number of processes that divides it")
    return errs


def shard(items: Sequence, rank: int, world_size: int) -> list:
    """``rank``'s contiguous share of one step's items. The step's items are decided by the step alone (the data
    position), so the union over ranks is the same batch at any world size and a resume is exact at any world
    size. The count must divide by the world size (an error naming the fix otherwise)."""
    n = len(items)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size} processes")
    if n % world_size:
        raise ValueError(f"{n} items per step do not divide among {world_size} processes; make the per-step count "
                         f"a multiple of {world_size}")
    k = n // world_size
    return list(items[rank * k:(rank + 1) * k])


def item_seed(seed: int, step: int, index: int, stream: int = 0) -> int:
    """The seed of the random draws that start at item ``index`` of step ``step`` (``stream`` tells apart draws of
    different kinds, e.g. sampling and each update epoch's shuffle): a function of the run seed and the data
    position only, so the same items draw the same numbers at any world size and after a resume."""
    return (((seed * 1_000_003 + step) * 1_000_033 + index) * 7_919 + stream) & (2**63 - 1)


# -- collectives (each a no-op, or the identity, in one process) -------------------------------------------------

def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """``obj`` of process ``src``, on every process."""
    if world()[1] <= 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def _comm_device(t: torch.Tensor) -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else t.device


def _all_reduce(t: torch.Tensor, op: str) -> torch.Tensor:
    """``t`` reduced with ``op`` (``SUM``, ``MAX``) over every process: a copy on ``t``'s device, ``t`` left alone."""
    out = t.detach().clone()
    if world()[1] > 1:
        buf = out.to(_comm_device(out))
        _same_layout(buf)
        dist.all_reduce(buf, op=getattr(dist.ReduceOp, op))
        out = buf.to(t.device)
    return out


def reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over every process (``t`` in one process)."""
    return _all_reduce(t, "SUM")


def reduce_max(t: torch.Tensor) -> torch.Tensor:
    """The elementwise largest ``t`` of any process (``t`` in one process)."""
    return _all_reduce(t, "MAX")


def any_process(flag: bool) -> bool:
    """True on every process when ``flag`` is true on any (a decision every process must take together)."""
    return bool(reduce_max(torch.tensor([int(flag)]))[0])


def gather_rows(t: torch.Tensor | None) -> torch.Tensor | None:
    """Every process's ``t`` (the same shape on each) concatenated along the first dimension, in rank order: the
    whole step's tensor, on every process."""
    if t is None or world()[1] <= 1:
        return t
    src = t.detach().contiguous().to(_comm_device(t))
    if src.dtype == torch.bool:  # not every backend gathers bool
        return gather_rows(src.to(torch.uint8)).bool().to(t.device)
    _same_layout(src)
    parts = [torch.empty_like(src) for _ in range(world()[1])]
    dist.all_gather(parts, src)
    return torch.cat(parts).to(t.device)


_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.uint8,
           torch.int8)
_MAX_DIMS = 8


def _same_layout(t: torch.Tensor) -> None:
    """Raise, on every process alike, when the processes' tensors for one gather or all-reduce differ in shape or
    dtype. Without this check such a bug is no error at all: gloo aborts the receiving process of a gather in C++
    (SIGABRT, no Python trace) or sums what does not belong together, NCCL hangs or returns garbage. It costs one
    gather of 10 integers (the step's own gathers and reductions are a handful of small tensors)."""
    code = _DTYPES.index(t.dtype) if t.dtype in _DTYPES else -1
    shape = list(t.shape[:_MAX_DIMS])  # every process sends 10 integers, whatever its tensor (no error before it)
    meta = torch.tensor([code, t.dim(), *shape] + [0] * (_MAX_DIMS - len(shape)), dtype=torch.int64, device=t.device)
    metas = [torch.empty_like(meta) for _ in range(world()[1])]
    dist.all_gather(metas, meta)
    seen = [(int(m[0]), tuple(int(x) for x in m[2:2 + min(int(m[1]), _MAX_DIMS)])) for m in metas]
    if any(int(m[1]) > _MAX_DIMS for m in metas):
        raise ValueError(f"a collective here takes at most {_MAX_DIMS} dimensions; the processes sent {seen}")
    if len(set(seen)) > 1:
        name = lambda c: str(_DTYPES[c]).removeprefix("torch.") if c >= 0 else "another dtype"  # noqa: E731
        raise RuntimeError("the processes' tensors of one collective differ (a bug: every process must send the "
                           "same shape; please report it): "
                           + ", ".join(f"rank {r}: {name(c)} {shape}" for r, (c, shape) in enumerate(seen)))


def gather_objects(items: list) -> list:
    """Every process's list, concatenated in rank order (e.g. the decoded responses of the whole step)."""
    if world()[1] <= 1:
        return list(items)
    out = [None] * world()[1]
    dist.all_gather_object(out, list(items))
    return [x for part in out for x in part]


def _buckets(tensors: list[torch.Tensor]):
    bucket, size = [], 0
    for t in tensors:
        if bucket and (size + t.numel() > _BUCKET or t.dtype != bucket[0].dtype or t.device != bucket[0].device):
            yield bucket
            bucket, size = [], 0
        bucket.append(t)
        size += t.numel()
    if bucket:
        yield bucket


def sync_gradients(params: list[torch.Tensor], scale: float = 1.0) -> None:
    """Replace each parameter's gradient by the sum over every process (times ``scale``), in flat buckets: after
    it every process holds the same gradient, so the same optimizer step keeps the copies identical. A parameter
    without a gradient on this process counts as zero (it still takes part, so every process sends the same
    buckets)."""
    if world()[1] <= 1:
        return
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    for bucket in _buckets([p.grad for p in params]):
        flat = torch.cat([g.reshape(-1) for g in bucket]).to(_comm_device(bucket[0]))
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        if scale != 1.0:
            flat.mul_(scale)
        flat = flat.to(bucket[0].device)
        i = 0
        for g in bucket:
            g.copy_(flat[i:i + g.numel()].view_as(g))
            i += g.numel()


@torch.no_grad()
def broadcast_params(params: list[torch.Tensor], src: int = 0) -> None:
    """Every process starts from process ``src``'s trainable values (as DDP does when it wraps a module)."""
    if world()[1] <= 1:
        return
    for p in params:
        buf = p.data.to(_comm_device(p))
        dist.broadcast(buf, src=src)
        p.data.copy_(buf)
