"""Killing a run that reads lazily through forked DataLoader workers frees its folder at once:
the workers do not keep the run lock they inherited alive."""

import contextlib
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tlroutes.runfolder.lock import RunLock

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="forked workers are POSIX")

SCRIPT = textwrap.dedent("""
    import sys, time
    import torch
    from tlroutes.runfolder.lock import RunLock
    from tlroutes.train.loading import loader

    class Slow(torch.utils.data.Dataset):
        def __len__(self):
            return 1000

        def __getitem__(self, i):
            return torch.zeros(2)

    lock = RunLock.acquire(sys.argv[1])
    batches = iter(loader(Slow(), workers=2, pin_memory=False, persistent=True))
    next(batches)  # the workers are running
    print("ready", flush=True)
    time.sleep(60)
""")


def test_a_killed_runs_workers_do_not_hold_its_lock(tmp_path):
    # A session of its own, so the orphaned workers can be killed with it at the end (a worker
    # whose parent died can hang on its full result queue and outlive the test).
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        # the orphaned workers notice their parent's death only seconds later; the lock must
        # not wait for them
        RunLock.acquire(tmp_path).release()
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group is gone: no worker outlived it
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
