"""The run-directory lock: a second holder fails at once and is told who holds it; death frees it."""

import json
import os
import signal
import subprocess
import sys

import pytest

from rlhp_core.run_lock import RunDirInUseError, RunLock

HOLDER = """
import sys, time
from rlhp_core.run_lock import RunLock
RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_second_process_refused_until_holder_killed(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run), "--holder-marker"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirInUseError) as caught:
            RunLock(run).acquire()
        message = str(caught.value)
        assert f"pid {proc.pid} on host " in message and "since " in message and "--holder-marker" in message
        assert str(run) in message
        assert isinstance(caught.value, ValueError)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        with RunLock(run) as lock:  # the kernel dropped the dead holder's lock; its record is replaced
            assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    finally:
        proc.kill()
        proc.wait()


def test_second_lock_in_same_process_refused_until_released(tmp_path):
    first = RunLock(tmp_path).acquire()
    with pytest.raises(RunDirInUseError, match=f"pid {os.getpid()} "):
        RunLock(tmp_path).acquire()
    first.release()
    assert (tmp_path / ".lock").read_text() == ""  # no holder recorded once free
    with pytest.raises(RuntimeError, match="ends the block"):
        with RunLock(tmp_path):
            raise RuntimeError("ends the block")
    RunLock(tmp_path).acquire().release()  # the with-block released it on the way out


def test_holder_not_yet_recorded(tmp_path):
    with RunLock(tmp_path) as lock:
        lock.path.write_text("")  # the moment between the holder's flock and its record
        with pytest.raises(RunDirInUseError, match="another process .*has not yet recorded itself"):
            RunLock(tmp_path).acquire()
