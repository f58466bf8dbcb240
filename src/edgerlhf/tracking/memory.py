"""Peak memory of *this* stage, not of the process's whole life.

``ru_maxrss`` never goes down, so a stage that runs after a bigger one would report the other's peak.
:class:`PeakMemory` samples the resident set size in a background thread (psutil) from the moment it is
started, and on CUDA it resets and reads ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import threading

import psutil
import torch


class PeakMemory:
    """``with PeakMemory() as pm: ...; pm.rss_mb, pm.cuda_mb`` (peak since start)."""

    def __init__(self, interval_s: float = 0.05):
        self.interval_s = interval_s
        self._proc = psutil.Process()
        self._stop = threading.Event()
        self._peak_rss = 0
        self._thread: threading.Thread | None = None

    def _sample(self):
        while not self._stop.is_set():
            self._peak_rss = max(self._peak_rss, self._proc.memory_info().rss)
            self._stop.wait(self.interval_s)

    def start(self) -> "PeakMemory":
        self._peak_rss = self._proc.memory_info().rss
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, daemon=True, name="edgerlhf-peak-memory")
        self._thread.start()
        return self

    def stop(self) -> "PeakMemory":
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._peak_rss = max(self._peak_rss, self._proc.memory_info().rss)
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def rss_mb(self) -> float:
        self._peak_rss = max(self._peak_rss, self._proc.memory_info().rss)
        return self._peak_rss / 2**20

    @property
    def cuda_mb(self) -> float:
        return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0

    def as_metrics(self) -> dict[str, float]:
        out = {"memory/peak_rss_mb": round(self.rss_mb, 1)}
        if torch.cuda.is_available():
            out["memory/cuda_max_allocated_mb"] = round(self.cuda_mb, 1)
        # the headline number: device memory on a GPU, resident memory on CPU
        out["memory/peak_mb"] = out.get("memory/cuda_max_allocated_mb", out["memory/peak_rss_mb"])
        return out


def peak_mb() -> float:
    """Current resident set size in MiB (a point reading, for logs)."""
    return psutil.Process().memory_info().rss / 2**20
