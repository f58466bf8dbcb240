"""Run a function in a fresh (spawned) process, so its peak memory is its own and everything it held is
returned to the system when it ends (``ru_maxrss`` and the allocator's cached pages never go down inside
one process, so a stage run after a bigger one would otherwise inherit its footprint)."""

from __future__ import annotations

import builtins
import ctypes
import multiprocessing as mp
import os
import queue
import signal
import sys
import traceback

from edgerlhf.config import UserCodeError


def _die_with_parent(parent: int) -> None:
    """Ask Linux to send this process SIGTERM when its parent dies (``prctl(PR_SET_PDEATHSIG)``): a killed
    ``edgerlhf run`` must not leave its stage running on as an orphan, using the cores and writing into the
    study. SIGTERM, not SIGKILL, so an online stage still stops at a step boundary with a checkpoint."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # it died before the request was in place
        os.kill(os.getpid(), signal.SIGTERM)


def _child(fn, args, q, parent=None, own_group=False):
    if own_group:  # out of the parent's process group: a group kill of the parent is not a second signal here
        os.setpgid(0, 0)
    if parent is not None:
        _die_with_parent(parent)
    try:
        q.put(("ok", fn(*args)))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which re-raises
        q.put(("error", (type(e).__name__, str(e), traceback.format_exc())))


class ChildError(RuntimeError):
    pass


def run_isolated(fn, *args, what: str = "child", own_group: bool = False):
    """``fn(*args)`` in a spawned process; returns its (picklable) result. An exception in the child is
    raised here as the same type where it is a builtin one (so ValueError/FileNotFoundError keep their
    meaning for the command line), else as :class:`ChildError`; a child that dies without a word (killed,
    out of memory) is a ChildError naming its exit code.

    ``own_group``: the child leaves the parent's process group. For a parent that is a Ray worker: when it dies, Ray
    kills its process group while the kernel sends the child SIGTERM (parent death), and an online stage would take
    the group's signal as a second one; in its own group only the parent-death SIGTERM reaches it (which the online
    stop takes as one request even when it arrives once per thread of the dying worker) and it writes its checkpoint.
    (Not for a terminal: Ctrl-C reaches the foreground group, which the child would have left.)"""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(fn, args, q, os.getpid(), own_group))
    p.start()
    try:
        while True:
            try:
                status, payload = q.get(timeout=0.5)  # read before join: a full pipe would block the child
                break
            except queue.Empty:
                if not p.is_alive():
                    p.join()
                    raise ChildError(f"{what} died with exit code {p.exitcode} before reporting (killed, or out of "
                                     "memory?)") from None
    except KeyboardInterrupt:  # the child got the same Ctrl-C: let it finish its checkpoint
        p.join()
        raise
    p.join()
    if status == "ok":
        return payload
    name, msg, tb = payload
    exc = getattr(builtins, name, None)
    if isinstance(exc, type) and issubclass(exc, Exception) and name not in ("KeyboardInterrupt",):
        raise exc(msg)
    if name == "KeyboardInterrupt":
        raise KeyboardInterrupt
    if name == "ConfigError":  # a ValueError: the command line reports it the same way
        raise ValueError(msg)
    if name == "UserCodeError":  # the user's gold / reward code: its message already shows the user's frames
        raise UserCodeError(msg)
    raise ChildError(f"{what} failed: {name}: {msg}\n{tb}")
