"""The autoscaling signal: how much work waits in each queue and lane, how long the oldest entry
has waited, and how many workers of each kind are alive.

`metrics.prom` (`cutor_spool_queue_depth`, `cutor_spool_queue_lane_oldest_age_seconds`,
`cutor_spool_workers`) and `cutor-spool list --json` (`queues`, `workers`) give the same figures,
so that KEDA, a HorizontalPodAutoscaler, the Nomad Autoscaler or a cron job can scale workers on
them (docs/deploy.md, "Autoscaling signal").

Every queue of `layout.QUEUES` is counted. Only submissions are claimed by priority lane
(`layout.QueueKind.prioritised`): their entries are counted in the lane their `.ready`
asks for, capped at spool.yaml's `max_priority` as the executor caps it (watcher/priority.py);
builds and invocations have the one lane `normal`. The named lanes (high, normal, low) always have
a series, zeros included; a numeric lane (`priority: 5`) has one while an entry waits in it.

Ages are judged on the filesystem's clock, as the page judges heartbeats (live.py): an entry's
arrival is the ctime its rename into incoming/ set on the file server.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cutor_spool.config import load_config
from cutor_spool.errors import CutorError
from cutor_spool.layout import QUEUES, QueueKind, SpoolPaths
from cutor_spool.watcher.arrivals import scan_arrivals
from cutor_spool.watcher.clock import FsClock
from cutor_spool.watcher.priority import LANES, lane_value, marker_priority
from cutor_spool.web_status import live

LANE_NAMES = {value: name for name, value in LANES.items()}
NAMED_LANES = tuple(sorted(LANES, key=LANES.__getitem__, reverse=True))  # high, normal, low
WORKER_KINDS = ("executor", "builder")


def queue_name(kind: QueueKind) -> str:
    return kind.folder or "submissions"


def lane_name(value: int) -> str:
    return LANE_NAMES.get(value, str(value))


@dataclass(frozen=True)
class Lane:
    depth: int
    oldest_age: float | None  # seconds; None when the lane is empty

    def to_json(self) -> dict[str, Any]:
        age = None if self.oldest_age is None else round(self.oldest_age, 3)
        return {"depth": self.depth, "oldest_age_seconds": age}


# Per incoming/: name -> (arrival, lane) of what this process's last look saw, so that a backlog of
# 10,000 is not stat'ed and its `.ready` markers not opened again at every regeneration.
_SEEN: dict[Path, dict[str, tuple[float, int]]] = {}


def _scan(incoming: Path, lanes: bool, cap: int) -> dict[str, tuple[float, int]]:
    known = _SEEN.get(incoming, {})
    try:
        arrivals = scan_arrivals(incoming, {name: seen[0] for name, seen in known.items()})
    except OSError:  # a shared spool's incoming/ is not listable by its submitters
        return {}
    found = {}
    for name, arrival in arrivals.items():
        seen = known.get(name)
        lane = seen[1] if seen is not None else (marker_priority(incoming / name, cap) if lanes else 0)
        found[name] = (arrival, lane)
    _SEEN[incoming] = found
    return found


_CAPS: dict[Path, tuple[tuple[int, int, int], int]] = {}  # spool.yaml -> (its stat, its cap)


def max_priority(paths: SpoolPaths) -> int:
    """spool.yaml's cap on lanes, read again only when the file changed (a regeneration comes
    every few seconds); the highest lane when spool.yaml cannot be read (the workers say why:
    they refuse to start)."""
    try:
        st = paths.config.stat()
        seen = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = _CAPS.get(paths.config)
        if cached is not None and cached[0] == seen:
            return cached[1]
        cap = lane_value(load_config(paths.root).max_priority)
    except (CutorError, OSError, ValueError):
        return 100
    _CAPS[paths.config] = (seen, cap)
    return cap


def queue_lanes(paths: SpoolPaths, now: float) -> dict[str, dict[str, Lane]]:
    """queue -> lane -> depth and oldest age, for every queue (named lanes first, then numeric
    lanes from highest to lowest)."""
    cap = max_priority(paths)
    out: dict[str, dict[str, Lane]] = {}
    for kind in QUEUES:
        prioritised = kind.prioritised
        entries = _scan(paths.queue(kind).incoming, prioritised, cap)
        oldest: dict[int, float] = {}
        depth: dict[int, int] = {}
        for arrival, lane in entries.values():
            depth[lane] = depth.get(lane, 0) + 1
            oldest[lane] = min(oldest.get(lane, arrival), arrival)
        values = sorted(set(depth) | {LANES[n] for n in (NAMED_LANES if prioritised else ("normal",))}, reverse=True)
        out[queue_name(kind)] = {
            lane_name(v): Lane(depth.get(v, 0), None if v not in oldest else max(0.0, now - oldest[v])) for v in values
        }
    return out


def worker_counts(workers: list[live.Worker]) -> dict[str, dict[str, int]]:
    """kind -> live and stale workers (by the freshness of their heartbeat, live.py)."""
    kinds = sorted({w.kind for w in workers} | set(WORKER_KINDS))
    return {
        kind: {
            "live": sum(1 for w in workers if w.kind == kind and w.alive),
            "stale": sum(1 for w in workers if w.kind == kind and not w.alive),
        }
        for kind in kinds
    }


def queues_json(lanes: dict[str, dict[str, Lane]]) -> dict[str, Any]:
    """What status.json and `list --json` say under `queues`: per queue its depth, its oldest
    entry's age and its lanes."""
    out: dict[str, Any] = {}
    for queue, by_lane in lanes.items():
        ages = [lane.oldest_age for lane in by_lane.values() if lane.oldest_age is not None]
        out[queue] = {
            "depth": sum(lane.depth for lane in by_lane.values()),
            "oldest_age_seconds": round(max(ages), 3) if ages else None,
            "lanes": {name: lane.to_json() for name, lane in by_lane.items()},
        }
    return out


def spool_now(paths: SpoolPaths) -> float:
    """The filesystem's now, from a probe file in tmp/; this host's clock when tmp/ is not
    writable (a submitter of a shared spool): a reader's figures are then off by the drift alone."""
    clock = FsClock(paths.tmp, f"reader-{os.getpid()}")
    try:
        return clock.now()
    except CutorError:
        return time.time()
    finally:
        try:
            clock.remove()
        except OSError:  # tmp/ not writable: the probe was never made
            pass


def signal(paths: SpoolPaths, now: float | None = None) -> dict[str, Any]:
    """`queues` and `workers` as `cutor-spool list --json` prints them."""
    now = spool_now(paths) if now is None else now
    return {
        "queues": queues_json(queue_lanes(paths, now)),
        "workers": worker_counts(live.workers(paths.workers, now)),
    }
