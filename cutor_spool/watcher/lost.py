"""Lost leases: telling a dead worker from a poison job.

A lease expires when its worker stops touching it. Almost always that is the worker's death (a
SIGKILL, a reboot, a crash, a host that froze or was cut off), and not the fault of the job it
held: counting every such expiry against `max_attempts` ended innocent jobs in `error` under
worker churn (3 executors, one SIGKILLed every 2 s: about 1 in 120 one-second jobs). But a job
that really takes its worker down every time must still end, or it kills workers forever.

The rule:

- When a reaper expires a lease, it looks up the lease's worker (the lease names it, and is
  trusted only if its token is the claim's: a client may plant a `.lease` before the claimer sets
  it aside) in `workers/`, and records in the expiry line of the attempt log: `worker`,
  `worker_died` and `others`, how many other claims the worker held at its last heartbeat (None
  when its heartbeat is gone or predates this claim). The worker *died* when its heartbeat file is gone or older than
  half the lease timeout, on the filesystem's clock: a live worker rewrites it every `heartbeat`
  seconds (at most a third of `lease_timeout`), in the same tick that touches its leases, so a
  worker whose leases all stopped and whose heartbeat stopped with them is dead, frozen or cut
  off, and one whose heartbeat goes on lost this lease alone.
- An expiry whose worker died is a *lost lease*: it does not count against `max_attempts`, but
  against `max_lost_leases` (default 10). At the claim after the cap the entry ends `error`
  ("gave up after N claims whose worker died while holding it").
- An expiry whose worker lived on, or whose worker is unknown, counts against `max_attempts`, as
  do system failures (`failed`); hand-backs on shutdown (`released`) count against neither.

Why not "count it when the worker ran that job alone"? Executors run one job at a time by
default, so a worker killed at random always ran its job alone: that test cannot tell churn from
poison. Nothing the spool sees can, but repetition: hence a second, higher cap, and `others` in
the log for an operator. And a job's commonest way to take its worker down is memory, which is
closed off: a stage's memory is bounded by its own cgroup, and on a host short of memory every
stage's and build's processes are the OOM killer's first choice (`oom_score_adj` 1000, set by
runner/launcher.py) and the workers its last (-900: `protect_from_oom`, which needs
CAP_SYS_RESOURCE, and `OOMScoreAdjust` in the systemd units).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cutor_spool.atomic import read_bytes
from cutor_spool.errors import CutorError

log = logging.getLogger(__name__)

WORKER_OOM_SCORE_ADJ = -900  # the workers: the OOM killer's last choice (stages: runner/launcher.py)
LEASE_BYTES = 4096  # a lease is a line of JSON; anything larger is not the spool's
_WORKER_ID = re.compile(r"[^/\x00.][^/\x00]{0,250}")  # a name in workers/, nothing else


@dataclass(frozen=True)
class Tally:
    """What an entry's attempt log says about its claims so far, the current one included."""

    claims: int
    released: int  # handed back on shutdown: counts against nothing
    lost: int  # expired because the worker died: counts against max_lost_leases

    @property
    def counted(self) -> int:
        """The claims that count against max_attempts."""
        return self.claims - self.released - self.lost


def tally(history: Iterable[Mapping[str, Any]], current: int = 1) -> Tally:
    """Counts `history` (the attempt log before this claim) plus `current` new claims."""
    claims = released = lost = 0
    for record in history:
        event = record.get("event")
        claims += event == "claimed"
        released += event == "released"
        lost += event == "expired" and record.get("worker_died") is True
    return Tally(claims + current, released, lost)


def own_lease(lease: Path, token: str) -> dict[str, Any] | None:
    """The lease's content if it is the claim's own (its token), else None (a client's)."""
    try:
        content = json.loads(read_bytes(lease, LEASE_BYTES, beneath=lease.parent.parent))
    except (OSError, ValueError, CutorError):
        return None
    return content if isinstance(content, dict) and content.get("token") == token else None


def worker_fate(
    workers: Path | None, lease: Mapping[str, Any] | None, entry_id: str, now: float, lease_timeout: float
) -> dict[str, Any]:
    """The fields an expiry record gets about the lease's worker (see the module's docstring):
    `worker`, `worker_died`, `others`. `lease` is the expired lease's content if its token was the
    claim's; `now` is the filesystem's clock."""
    worker = lease.get("worker") if lease is not None else None
    if workers is None or not isinstance(worker, str) or not _WORKER_ID.fullmatch(worker):
        return {"worker": None, "worker_died": False, "others": None}
    path = workers / f"{worker}.json"
    try:
        age = now - os.lstat(path).st_mtime
    except FileNotFoundError:
        return {"worker": worker, "worker_died": True, "others": None}
    except OSError as exc:
        log.warning("%s: cannot read the heartbeat of %s: %s", entry_id, worker, exc)
        return {"worker": worker, "worker_died": False, "others": None}
    return {"worker": worker, "worker_died": age > lease_timeout / 2, "others": _others(path, entry_id)}


def _others(heartbeat: Path, entry_id: str) -> int | None:
    """How many claims but `entry_id` the heartbeat lists; None if it does not list `entry_id`
    (the worker died within a heartbeat of claiming it: what it listed then may be done since).
    The spool's own file (workers/ is not the clients'), read without trusting its shape."""
    try:
        current = json.loads(heartbeat.read_bytes()).get("current")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(current, list):
        return None
    ids = [work.get("id") if isinstance(work, dict) else None for work in current]
    return len(ids) - 1 if entry_id in ids else None


def protect_from_oom() -> None:
    """Makes this worker the OOM killer's last choice (lowering a score needs CAP_SYS_RESOURCE;
    its children inherit it, which is why the launcher raises every stage's to the top). Best
    effort: without the capability (some containers), a warning; the systemd units set the same
    score before the worker starts (`OOMScoreAdjust`), and the stages stay above it anyway."""
    try:
        with open("/proc/self/oom_score_adj", "w", encoding="ascii") as fh:
            fh.write(str(WORKER_OOM_SCORE_ADJ))
    except OSError as exc:
        if _score() != WORKER_OOM_SCORE_ADJ:
            log.warning("cannot make this worker the OOM killer's last choice (CAP_SYS_RESOURCE?): %s", exc)


def _score() -> int | None:
    try:
        with open("/proc/self/oom_score_adj", encoding="ascii") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return None
