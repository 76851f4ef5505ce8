"""What moving a process into a cgroup costs on this host after a pause, measured once when an
executor starts, and said in its log when it is slow.

Every stage's launcher moves itself into the stage's cgroups (its pid written to `cgroup.procs`).
The kernel serialises moves against forks and exits with `cgroup_threadgroup_rwsem`, a per-CPU
read-write semaphore whose writer waits for an RCU grace period unless another writer passed
within about one. So a stage that follows another moves at once, and the first stage after a
pause waits a grace period: 8.4 ms on the development machine (kernel 6.18, cgroup v1), which
took a trivial submission that reached an idle executor from 5 ms back to back to 22-24 ms from
drop to final (docs/benchmarks.md, "Submissions that reach an idle executor"). Most submissions
reach an idle executor on a judge, a grading queue or a function behind the gateway.

A host can favour such moves (`favordynmods`; for operators:
docs/deploy.md, "Host tuning: cgroup moves after a pause"); then moves cost the same after a
pause. Whether a host does cannot be read reliably (on kernel 6.18 the per-
thread-group semaphore that `favordynmods` turns on stays on after the option is removed), so it
is measured: a sleeping child moved into a fresh cgroup after `PAUSE` without a move by this
process. Other processes' moves in the pause make the figure low, never high: a warning is
never wrong about the host, only sometimes missing.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time

from cutor_spool.runner.cgroupfs import write_control
from cutor_spool.runner.cgroups import CgroupHost

log = logging.getLogger(__name__)

PAUSE = 0.06  # seconds without a move before the one timed: longer than a grace period is here
SLOW_MS = 2.0  # a move after a pause slower than this is a grace period waited for
PREFIX = "movecheck-"


def move_after_pause(host: CgroupHost, pause: float = PAUSE) -> float:
    """Milliseconds to move a sleeping child into a fresh cgroup after `pause` seconds."""
    _remove_leftovers(host)
    cgroup = host.create(f"{PREFIX}{os.getpid()}")
    try:
        sleeper = shutil.which("sleep") or "/bin/sleep"  # short: it outlives an executor killed meanwhile
        child = subprocess.Popen(
            [sleeper, "5"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            time.sleep(pause)  # the pause is what is measured after
            start = time.perf_counter()
            write_control(cgroup.procs_files[0], str(child.pid))
            return (time.perf_counter() - start) * 1000
        finally:
            child.kill()
            child.wait()
    finally:
        cgroup.remove()


def _remove_leftovers(host: CgroupHost) -> None:
    """The check's cgroups of executors that died during theirs (a live one's is left alone)."""
    for cgroup in host.left_by_dead(PREFIX):
        cgroup.remove()


def advice(cost_ms: float) -> str | None:
    """The warning for a move that took `cost_ms` after a pause; None when it is fast."""
    if cost_ms < SLOW_MS:
        return None
    return (
        f"moving a process into a cgroup takes {cost_ms:.1f} ms on this host after a pause (the kernel "
        "waits for an RCU grace period): every submission that reaches an idle executor pays it in "
        "its first stage. Favour dynamic cgroup changes on this host to avoid it (favordynmods): "
        "docs/deploy.md, 'Host tuning: cgroup moves after a pause'"
    )


def check_in_background(host: CgroupHost) -> threading.Thread:
    """Measures once in a thread of its own (the executor does not wait for it) and logs the
    advice, if any; a failure to measure is logged and changes nothing."""

    def run() -> None:
        try:
            message = advice(move_after_pause(host))
        except Exception as exc:  # a check: the executor works without it
            log.info("cannot measure the cost of a cgroup move: %s", exc)
            return
        if message is not None:
            log.warning("%s", message)

    thread = threading.Thread(target=run, name="cgroup-move-check", daemon=True)
    thread.start()
    return thread
