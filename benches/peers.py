"""Helpers the cluster benchmarks (swarm.py, interop.py) share: a child process with its log,
stopped with SIGTERM then SIGKILL; a bounded wait that raises RuntimeError (so one failed
direction of interop.py does not end the run); the sha256 of an output, from harness.py."""

import signal
import subprocess
import time

from harness import sha256_file  # noqa: F401  (re-exported: one copy of the output check)


class Proc:
    """A child process with its log file, stopped with SIGTERM then SIGKILL."""

    def __init__(self, cmd, log_path):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                  start_new_session=True)

    def alive(self):
        return self.p.poll() is None

    def stop(self, grace_s=8):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()


def wait_for(pred, limit_s, what):
    deadline = time.time() + limit_s
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise RuntimeError("timed out after %d s waiting for %s" % (limit_s, what))
