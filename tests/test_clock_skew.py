"""Workers whose clocks are off by minutes neither reap live leases nor keep dead ones: lease
decisions follow the filesystem's clock.

The skew is real as far as the worker can tell: libfaketime shifts every clock call of the
executor's process (`NO_FAKE_STAT=1` keeps file timestamps honest, as a file server's would be).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import LEASE_TIMEOUT, drop, make_submission, need, result, stage, wait_done

FAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


@pytest.fixture(autouse=True)
def _no_stale_faketime_segments() -> Iterator[None]:
    """libfaketime shares its settings through /dev/shm/faketime_shm_<pid> and
    sem.faketime_sem_<pid>, made by the first process that loads it and removed by its exit
    handler: an executor these tests kill leaves both behind, and a later process given the same
    pid fails to start ("shm_open failed: File exists"; libfaketime's README). With pid_max at
    32768, 74 of them had piled up here in two days. Those of processes that are gone go."""
    yield
    for path in Path("/dev/shm").glob("*faketime_s*_*"):
        pid = path.name.rpartition("_")[2]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            path.unlink(missing_ok=True)


def skewed(offset: str) -> dict[str, str]:
    need(FAKETIME.exists(), "libfaketime (apt install libfaketime)")
    # Not in strict mode: under libfaketime, Python's short sleeps sometimes fail with EINVAL (its
    # clock_nanosleep), as they never do on a real clock. Seen once the raw OSError escaped a
    # cgroup's freeze loop; a worker then retries the stage, as it would any failure of the system.
    return {
        "LD_PRELOAD": str(FAKETIME),
        "FAKETIME": offset,
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "NO_FAKE_STAT": "1",
        "CUTOR_SPOOL_STRICT": "0",
    }


def wait_running(spool: Path, entry_id: str, timeout: float = 30) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for claim in (spool / "active").glob(f"{entry_id}.*"):
            status = claim / "result" / "status.json"
            if status.exists() and json.loads(status.read_text()).get("state") == "running":
                return claim
        time.sleep(0.02)
    raise AssertionError(f"{entry_id} never ran")


def wait_worker(spool: Path, pid: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.name.endswith(f"-{pid}.json") for p in (spool / "workers").iterdir()):
            return
        time.sleep(0.05)
    raise AssertionError(f"worker {pid} never started")


@pytest.mark.slow  # ~13 s: a 12 s job outlives two lease timeouts
def test_a_worker_ten_minutes_ahead_does_not_reap_a_live_lease(spool: Path, tmp_path: Path, executors: Any) -> None:
    executors(spool)  # honest clock, one slot: it takes the long job
    drop(
        spool,
        make_submission(tmp_path, "long", {"run": "sleep 12; echo finished", "limits": {"run": {"wall_time": "30s"}}}),
        "long",
    )
    claim = wait_running(spool, "long")
    ahead = executors(spool, env=skewed("+10m"))  # would see every lease as 10 minutes old
    wait_worker(spool, ahead.pid)
    time.sleep(2 * LEASE_TIMEOUT)  # two lease timeouts of the skewed worker's reaper, every heartbeat
    assert claim.exists(), "a live lease was reaped"
    drop(spool, make_submission(tmp_path, "quick", {"run": "echo quick"}), "quick")
    wait_done(spool, ["long", "quick"], timeout=60)
    status = result(spool, "long")
    assert status["attempts"] == 1, "a live lease was reaped"
    assert status["outcome"] == "ok"
    assert stage(spool, "long", "run")["stdout"] == "finished\n"
    assert result(spool, "quick")["worker"].endswith(f"-{ahead.pid}")  # the skewed worker works
    assert "expired" not in (spool / "done" / "long" / "result" / "attempts.jsonl").read_text()


# ~6 s (a lease timeout), yet not slow: the module's quickest test keeps it in the quick tier.
def test_a_dead_workers_lease_is_reaped_whatever_its_clock_said(spool: Path, tmp_path: Path, executors: Any) -> None:
    """The dead worker's clock ran 10 minutes ahead: a lease stamped with its own idea of now
    would look 10 minutes in the future to everyone else, and be kept long after it died.
    (libfaketime cannot put a Python worker *behind*: with a negative offset it breaks Python's
    time.sleep, which sleeps with an absolute clock_nanosleep. The reaper's own clock is never
    read for lease decisions, as the test above shows for a reaper ahead.)"""
    doomed = executors(spool, env=skewed("+10m"))
    drop(spool, make_submission(tmp_path, "long", {"run": "sleep 2; echo finished"}), "orphan")
    wait_running(spool, "orphan")
    doomed.kill()
    killed = time.monotonic()
    executors(spool)
    wait_done(spool, "orphan", timeout=60)
    assert time.monotonic() - killed < 30  # a few lease timeouts (3 s in tests): not ten minutes
    status = result(spool, "orphan")
    assert (status["outcome"], status["attempts"]) == ("ok", 2)
