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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("own_group, signals", [(True, 1), (False, 2)])
def test_a_stage_process_in_its_own_group_gets_one_signal_when_its_ray_worker_dies(tmp_path, own_group, signals):
    """Ray kills a dead worker's process group while the kernel sends the stage process SIGTERM for its parent's
    death: two signals, and an online stage takes the second as "stop now, no checkpoint". In its own group the
    stage process gets one."""
    (tmp_path / "counter.py").write_text(textwrap.dedent("""
        import os, signal, time
        def count_sigterms(path):
            signal.signal(signal.SIGTERM, lambda *a: open(path, "a").write("TERM\\n"))
            open(path, "w").write(f"pid {os.getpid()}\\n")
            deadline = time.time() + 60
            while time.time() < deadline and open(path).read().count("TERM") < 1:
                time.sleep(0.05)
            time.sleep(1.5)  # a second signal would land here
    """))
    log = tmp_path / "child.log"
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(tmp_path)!r})
        from counter import count_sigterms
        from edgerlhf.tracking.isolate import run_isolated
        run_isolated(count_sigterms, {str(log)!r}, own_group={own_group})
    """)], env={**os.environ, "PYTHONPATH": str(tmp_path)}, start_new_session=True)  # a Ray worker: its own group
    try:
        for _ in range(600):
            if log.is_file() and log.read_text().startswith("pid"):
                break
            time.sleep(0.1)
        child = int(log.read_text().split()[1])
        os.killpg(parent.pid, signal.SIGTERM)  # what Ray does to a dead worker's group
        parent.wait()
        for _ in range(100):
            if not _alive(child):
                break
            time.sleep(0.1)
        assert log.read_text().count("TERM") == signals
    finally:
        parent.kill()
        if log.is_file() and log.read_text().startswith("pid") and _alive(int(log.read_text().split()[1])):
            os.kill(int(log.read_text().split()[1]), signal.SIGKILL)
