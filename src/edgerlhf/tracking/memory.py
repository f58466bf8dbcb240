"""Peak memory of *this* stage, not of the process's whole life.

``ru_maxrss`` never goes down, so a stage that runs after a bigger one would report the other's peak.
:class:`PeakMemory` measures the peak from the moment it is started:

* ``vmhwm`` (Linux >= 4.0): the kernel's own high-water mark of the resident set. Writing ``5`` to
  ``/proc/self/clear_refs`` resets ``VmHWM`` in ``/proc/self/status`` to the current RSS, and the kernel
  raises it on every page the process touches, so a spike that lasts one C call is seen: no thread, no
  sampling gap.
* ``sampled`` (the fallback where that file cannot be written: other systems, some sandboxes): a
  background thread samples the RSS (psutil) every ``interval_s``; a spike shorter than that can be missed.
* on CUDA, ``torch.cuda.reset_peak_memory_stats`` + ``max_memory_allocated`` as well.

``as_metrics()`` names the method under ``memory/peak_method`` so every summary says how its peak was had.
Several probes may be live at once (a stage's, and one around loading inside it): resetting the kernel's mark
for a new probe first folds the mark so far into every live probe, so no probe loses its peak.

Resetting the mark also hides earlier peaks from ``ru_maxrss`` (the kernel keeps one mark), so every reset folds
it into a process-wide maximum as well: :func:`process_peak_bytes` (``memory/process_peak_mb`` in summaries) is
the peak since the process started, model loading included: the number to compare with a peer's ``ru_maxrss``.

:func:`release_free_memory` hands memory that PyTorch has freed back to the system (glibc keeps freed blocks
below its mmap threshold in its heaps, so after a large transient the resident set stays high and the next
phase's peak stacks on top of it).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import re
import threading
from pathlib import Path

import psutil
import torch

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")
_HWM = re.compile(r"^VmHWM:\s+(\d+)\s+kB", re.M)


def read_hwm_bytes() -> int | None:
    """The kernel's resident-set high-water mark of this process (bytes), or None where it is not exposed."""
    try:
        m = _HWM.search(_STATUS.read_text())
    except OSError:
        return None
    return int(m.group(1)) * 1024 if m else None


def reset_hwm() -> bool:
    """Reset the kernel's high-water mark to the current RSS; False where that is not possible."""
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
    except OSError:
        return False
    return read_hwm_bytes() is not None


_live: list["PeakMemory"] = []  # probes using the kernel's mark, to fold it into before a reset
_live_lock = threading.Lock()
_process_peak = 0  # the kernel's mark as it was before each reset: the process's peak survives resets


def process_peak_bytes() -> int | None:
    """The resident-set peak since this process started (resets by :class:`PeakMemory` included), or None
    where the kernel's mark is not exposed."""
    hwm = read_hwm_bytes()
    return None if hwm is None else max(hwm, _process_peak)


def release_free_memory() -> bool:
    """Return the C heap's free pages to the system (glibc ``malloc_trim``); False where there is no glibc.
    Cheap (milliseconds): call it after a phase that allocated and freed a lot (a model load, an update)."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc.malloc_trim  # noqa: B018 - musl and other C libraries have no malloc_trim
        except (OSError, AttributeError):
            _libc = False
    if not _libc:
        return False
    _libc.malloc_trim(0)
    return True


_libc = None
_M_MMAP_THRESHOLD = -3  # mallopt parameter numbers (glibc malloc.h)
_DYNAMIC_MAX = 32 * 2**20  # glibc's ceiling for its dynamic mmap threshold on 64-bit systems


@contextlib.contextmanager
def lean_heap(threshold: int = 2**20):
    """Inside: every allocation of ``threshold`` bytes or more is its own mapping, handed back to the system the
    moment it is freed (glibc ``mallopt(M_MMAP_THRESHOLD)``). glibc's default raises that threshold as large
    blocks are freed, up to 32 MiB, so a backward pass's many few-MiB activations are carved from its heaps,
    and fragmentation keeps the resident set far above what is live (measured: a SmolLM2 update's transient
    +500 MB becomes +160 MB). The price is a page fault per fresh block: the update runs slower
    (``bench/trl_grpo_peer.py`` measures both). On leaving, the threshold stays fixed at glibc's dynamic
    ceiling, which is where the default settles anyway. A no-op without glibc."""
    release_free_memory()  # loads _libc
    if not _libc:
        yield False
        return
    _libc.mallopt(_M_MMAP_THRESHOLD, int(threshold))
    try:
        yield True
    finally:
        _libc.mallopt(_M_MMAP_THRESHOLD, _DYNAMIC_MAX)


class PeakMemory:
    """``with PeakMemory() as pm: ...; pm.rss_mb, pm.cuda_mb, pm.method`` (peak since start)."""

    def __init__(self, interval_s: float = 0.05, method: str = "auto"):
        if method not in ("auto", "vmhwm", "sampled"):
            raise ValueError(f"method={method!r}: use auto, vmhwm or sampled")
        self.interval_s = interval_s
        self._want = method
        self.method = ""  # decided at start: 'vmhwm' or 'sampled'
        self._proc = psutil.Process()
        self._stop = threading.Event()
        self._peak_rss = 0
        self._thread_peak = 0  # the sampler thread's own maximum: only that thread writes it (no lost update when
        #                        the main thread raises _peak_rss at the same moment)
        self._thread: threading.Thread | None = None
        self._running = False

    # -- the sampler (fallback) ---------------------------------------------------------------------
    def _sample(self):
        while not self._stop.is_set():
            self._thread_peak = max(self._thread_peak, self._proc.memory_info().rss)
            self._stop.wait(self.interval_s)

    def start(self) -> "PeakMemory":
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        if self._want in ("auto", "vmhwm"):
            global _process_peak
            with _live_lock:
                hwm = read_hwm_bytes()
                _process_peak = max(_process_peak, hwm or 0)
                for other in _live:  # their peak so far must survive this reset
                    other._peak_rss = max(other._peak_rss, hwm or 0)
                ok = reset_hwm()
                if ok:
                    self.method = "vmhwm"
                    self._peak_rss = read_hwm_bytes() or 0
                    _live.append(self)
                    self._running = True
                    return self
            if self._want == "vmhwm":
                raise OSError(f"cannot reset the kernel's memory high-water mark ({_CLEAR_REFS} not writable)")
        self.method = "sampled"
        self._peak_rss = self._proc.memory_info().rss
        self._thread_peak = 0
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True, name="edgerlhf-peak-memory")
        self._thread.start()
        self._running = True
        return self

    def _current_peak(self) -> int:
        if self.method == "vmhwm":
            return read_hwm_bytes() or 0
        return self._proc.memory_info().rss

    def stop(self) -> "PeakMemory":
        if not self._running:
            return self
        self._peak_rss = max(self._peak_rss, self._current_peak())
        if self.method == "vmhwm":
            with _live_lock:
                if self in _live:
                    _live.remove(self)
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            self._peak_rss = max(self._peak_rss, self._thread_peak)
        self._running = False
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def rss_mb(self) -> float:
        if self._running:
            self._peak_rss = max(self._peak_rss, self._thread_peak, self._current_peak())
        return self._peak_rss / 2**20

    @property
    def cuda_mb(self) -> float:
        return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0

    def as_metrics(self) -> dict:
        out = {"memory/peak_rss_mb": round(self.rss_mb, 1)}
        if torch.cuda.is_available():
            out["memory/cuda_max_allocated_mb"] = round(self.cuda_mb, 1)
        # the headline number: device memory on a GPU, resident memory on CPU
        out["memory/peak_mb"] = out.get("memory/cuda_max_allocated_mb", out["memory/peak_rss_mb"])
        out["memory/peak_method"] = "cuda_max_allocated" if torch.cuda.is_available() else self.method
        out["memory/rss_method"] = self.method
        if self.method == "vmhwm":
            out["memory/process_peak_mb"] = round((process_peak_bytes() or 0) / 2**20, 1)
        return out


def peak_mb() -> float:
    """Current resident set size in MiB (a point reading, for logs)."""
    return psutil.Process().memory_info().rss / 2**20
