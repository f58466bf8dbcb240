"""A lock on a stage's run folder, held by the process that runs the stage: one writer per folder.

Why: when the Ray worker running a stage dies, its stage process gets SIGTERM (``isolate``) and an online stage
stops at its next step boundary, writing a checkpoint; Ray retries the stage at once, elsewhere. Without a lock the
retry would see a half-written folder and move it aside (or resume from an older checkpoint) while the first process
is still writing into it. With it, the retry waits until that process has stopped, then finds the stage finished,
resumes from the newest checkpoint, or starts clean. The same holds for two ``edgerlhf run`` on one study folder.

``flock`` on a lock file beside the folders (not inside one: a folder may be moved aside): the kernel drops it when
the holder exits or is killed, even by SIGKILL, so a dead holder never blocks anyone. NFS: Linux maps ``flock`` to
POSIX locks there, so a study on shared storage is locked across nodes.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # not on POSIX (Windows): no lock, one process per study folder is then the user's to keep
    fcntl = None


@contextmanager
def folder_lock(lock_file: Path, what: str, log=print):
    """Hold an exclusive lock on ``lock_file`` for the block; if another process holds it, say who and wait."""
    if fcntl is None:
        yield
        return
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            log(f"[run] {what}: waiting for {holder} to stop (an earlier attempt stopping at its step boundary, "
                "or another `edgerlhf run` on this study)")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {os.uname().nodename}".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the file releases the lock
