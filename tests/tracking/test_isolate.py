"""Stages in their own process: results and errors come back, and a child never outlives its parent."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from edgerlhf.tracking.isolate import run_isolated


def test_result_and_builtin_errors_come_back():
    assert run_isolated(pow, 3, 4) == 81
    with pytest.raises(ValueError, match="invalid literal"):
        run_isolated(int, "x", what="parse")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead too
        return f.read().split(")")[1].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_killed_parent_takes_its_stage_process_with_it(tmp_path):
    """`edgerlhf run` killed (here: SIGKILL, no handler can run) must not leave its stage running as an orphan."""
    (tmp_path / "sleeper.py").write_text(textwrap.dedent("""
        import os, time
        def sleep_and_tell(path):
            open(path, "w").write(str(os.getpid()))
            time.sleep(120)
    """))
    pidfile = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(tmp_path)!r})
        from sleeper import sleep_and_tell
        from edgerlhf.tracking.isolate import run_isolated
        run_isolated(sleep_and_tell, {str(pidfile)!r})
    """)], env={**os.environ, "PYTHONPATH": str(tmp_path)})
    try:
        for _ in range(600):  # the child starts (spawn imports Python afresh)
            if pidfile.is_file() and pidfile.read_text():
                break
            time.sleep(0.1)
        child = int(pidfile.read_text())
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        for _ in range(300):
            if not _alive(child):
                break
            time.sleep(0.1)
        assert not _alive(child), "the stage process outlived its parent"
    finally:
        parent.kill()
        if pidfile.is_file() and pidfile.read_text() and _alive(int(pidfile.read_text())):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups as Linux has them")
@pytest.mark.parametrize("own_group", [True, False])
def test_a_stage_process_for_a_ray_worker_leaves_its_process_group(tmp_path, own_group):
    """Ray kills a dead worker's process group: a stage process still in it would be killed outright (or signalled
    twice) instead of stopping at its step boundary with a checkpoint. With ``own_group`` it is out of that group and
    survives the group kill until its parent-death SIGTERM lets it stop."""
    (tmp_path / "teller.py").write_text(textwrap.dedent("""
        import os, time
        def tell_group(path):
            open(path, "w").write(f"{os.getpid()} {os.getpgid(0)}")
            time.sleep(60)
    """))
    log = tmp_path / "child.txt"
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(tmp_path)!r})
        from teller import tell_group
        from edgerlhf.tracking.isolate import run_isolated
        run_isolated(tell_group, {str(log)!r}, own_group={own_group})
    """)], env={**os.environ, "PYTHONPATH": str(tmp_path)}, start_new_session=True)  # a Ray worker: its own group
    try:
        for _ in range(600):
            if log.is_file() and len(log.read_text().split()) == 2:
                break
            time.sleep(0.1)
        child, group = map(int, log.read_text().split())
        assert (group != parent.pid) is own_group
        os.killpg(parent.pid, signal.SIGKILL)  # the worker's group, as Ray kills it
        parent.wait()
        for _ in range(100):  # either way the child goes: killed with the group, or by its parent-death SIGTERM
            if not _alive(child):
                break
            time.sleep(0.1)
        assert not _alive(child)
    finally:
        parent.kill()
        if log.is_file() and len(log.read_text().split()) == 2 and _alive(int(log.read_text().split()[0])):
            os.kill(int(log.read_text().split()[0]), signal.SIGKILL)
