"""What is happening now: the queue, active submissions, workers and builds.

These parts are small (a queue of names, a few active claims, a heartbeat file per worker) and
change every second, so each regeneration reads them afresh; the done submissions, which grow
without bound, come from the index instead (`index.py`).

Liveness is judged on the filesystem's clock: a worker is alive while its heartbeat file's mtime
(stamped by the file server) is recent against `now` from the same clock, never against the
`heartbeat_at` the worker wrote with its own, possibly drifting, clock.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from cutor_spool.builder.inventory import CachedEnv, read_uses
from cutor_spool.builder.requests import RESULT_NAME, USES_NAME
from cutor_spool.documents.build import BuildRecord
from cutor_spool.documents.heartbeat import Heartbeat
from cutor_spool.documents.status import StatusDocument
from cutor_spool.layout import QueueDirs
from cutor_spool.watcher.arrivals import scan_arrivals
from cutor_spool.watcher.ids import split_active
from cutor_spool.web_status.model import BUILD_KEYS, clip
from cutor_spool.web_status.reading import (
    LIVE_DIR,
    LIVE_OUT_SUFFIX,
    STATUS_LIMIT,
    json_object,
    open_dir,
    open_subdir,
    read_document,
    read_json,
)

QUEUE_SHOWN = 50
HEARTBEAT_LIMIT = 1 * 2**20
BUILD_RECORD_LIMIT = 16 * 2**20  # a build record may list a long closure


@dataclass(frozen=True)
class Queue:
    length: int
    oldest_age: float | None
    first: list[tuple[str, float]]  # (name, age) of the oldest entries, oldest first


_ARRIVALS: dict[Path, dict[str, float]] = {}  # per incoming/: what this process's last look saw


def queue(incoming: Path, now: float, shown: int = QUEUE_SHOWN) -> Queue:
    """The entries waiting in incoming/, oldest arrival (ctime) first, like the executors take
    them. A worker regenerates the page again and again: names it has seen are not stat'ed again."""
    try:
        arrivals = scan_arrivals(incoming, _ARRIVALS.get(incoming, {}))
    except OSError:
        return Queue(0, None, [])
    _ARRIVALS[incoming] = arrivals
    found = sorted((arrival, name) for name, arrival in arrivals.items())
    return Queue(
        length=len(found),
        oldest_age=max(0.0, now - found[0][0]) if found else None,
        first=[(name, max(0.0, now - ctime)) for ctime, name in found[:shown]],
    )


@dataclass(frozen=True)
class ActiveEntry:
    id: str
    token: str
    path: Path
    state: str
    worker: str | None
    host: str | None
    attempt: int | None
    since: str | None  # when it reached its current state
    status: StatusDocument | None


def result_stamp(entry: Path) -> list[int]:
    """(inode, mtime) of result/ and of result/status.json (zeros where missing), and the sizes of
    the live output files."""
    out = []
    for path in (entry / "result", entry / "result" / "status.json"):
        try:
            st = os.lstat(path)
            out += [st.st_ino, st.st_mtime_ns]
        except OSError:
            out += [0, 0]
    # Output so far (result/live/<stage>.out) grows without touching any directory: its sizes.
    try:
        with os.scandir(entry / "result" / LIVE_DIR) as it:
            out += sorted(e.stat(follow_symlinks=False).st_size for e in it if e.name.endswith(LIVE_OUT_SUFFIX))
    except OSError:
        pass
    return out


class _Lease(BaseModel):
    """The claim's `.lease` as the page needs it, until the first status.json is written."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    worker: str | None = None
    host: str | None = None
    attempt: int | None = None
    claimed_at: str | None = None


def _read_lease(value: object) -> _Lease:
    try:
        return _Lease.model_validate(value)
    except ValidationError:
        return _Lease()


def _active_entry(name: str, token: str, path: Path, status: StatusDocument | None, lease: _Lease) -> ActiveEntry:
    if status is None:
        return ActiveEntry(name, token, path, "claimed", clip(lease.worker, 200), clip(lease.host, 200),
                           lease.attempt, clip(lease.claimed_at, 40), None)  # fmt: skip
    state = status.state.value
    return ActiveEntry(
        id=name,
        token=token,
        path=path,
        state=state,
        worker=clip(status.worker or lease.worker, 200),
        host=clip(status.host or lease.host, 200),
        attempt=status.attempts or lease.attempt,
        since=clip(status.states.get(state) or lease.claimed_at, 40),
        status=status,
    )


def active(dirs: QueueDirs) -> list[ActiveEntry]:
    out: list[ActiveEntry] = []
    try:
        names = sorted(e.name for e in os.scandir(dirs.active) if not e.name.startswith("."))
    except OSError:
        return out
    for name in names:
        parsed = split_active(name)
        if parsed is None:
            continue
        path = dirs.active / name
        with open_dir(path) as entry_fd:
            lease = read_json(entry_fd, ".lease", HEARTBEAT_LIMIT)
            with open_subdir(entry_fd, "result") as result_fd:
                status = read_document(result_fd, "status.json", STATUS_LIMIT, StatusDocument)
        if entry_fd is None:
            continue  # committed or requeued while we looked
        found = status if isinstance(status, StatusDocument) else None
        out.append(_active_entry(parsed[0], parsed[1], path, found, _read_lease(lease)))
    return out


@dataclass(frozen=True)
class Worker:
    id: str
    kind: str
    host: str
    pid: int | None
    alive: bool
    age: float  # seconds since its last heartbeat, on the filesystem's clock
    interval: float | None
    processed: int | None
    version: str | None
    started_at: str | None
    current: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, str] = field(default_factory=dict)
    unexpected_errors: int = 0  # programming errors the worker met (watcher/maintenance.py)


STALE_AFTER_HEARTBEATS = 3
STALE_MIN_SECONDS = 10.0
_INFO = ("backend", "concurrency", "poll", "store")  # what the page lists of a worker's settings


def _worker(heartbeat: Heartbeat, age: float) -> Worker:
    limit = max(STALE_MIN_SECONDS, STALE_AFTER_HEARTBEATS * heartbeat.heartbeat_interval)
    info = {key: clip(getattr(heartbeat, key), 100) or "" for key in _INFO if getattr(heartbeat, key) is not None}
    if heartbeat.sandbox is not None:  # an executor whose host cannot run stages (health.py)
        info["sandbox"] = clip(heartbeat.sandbox, 400) or ""
    return Worker(
        id=clip(heartbeat.worker, 200) or "?",
        kind=clip(heartbeat.kind, 40) or "?",
        host=clip(heartbeat.host, 200) or "?",
        pid=heartbeat.pid,
        alive=age <= limit,
        age=age,
        interval=heartbeat.heartbeat_interval,
        processed=heartbeat.processed,
        version=clip(heartbeat.version, 40),
        started_at=clip(heartbeat.started_at, 40),
        current=[c.dump() for c in heartbeat.current],
        info=info,
        unexpected_errors=heartbeat.unexpected_errors,
    )


def workers(directory: Path, now: float) -> list[Worker]:
    """Every heartbeat file; alive ones first. A worker killed with SIGKILL leaves its file behind:
    it shows as stale (what an operator wants to see), not as gone."""
    out: list[Worker] = []
    try:
        entries = [e for e in os.scandir(directory) if e.name.endswith(".json") and not e.name.startswith(".")]
    except OSError:
        return out
    for entry in entries:
        try:
            mtime = entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        heartbeat = Heartbeat.read(json_object(Path(entry.path), HEARTBEAT_LIMIT))
        if heartbeat is not None:
            out.append(_worker(heartbeat, max(0.0, now - mtime)))
    out.sort(key=lambda w: (not w.alive, w.kind, w.host, w.id))
    return out


def count_entries(directory: Path) -> int:
    try:
        with os.scandir(directory) as it:
            return sum(1 for e in it if not e.name.startswith("."))
    except OSError:
        return 0


def build_signature(entry: Path, base: list[int]) -> list[int]:
    """A cached environment changes when it is rebuilt (the entry) or used again (its `uses/`
    markers, one per submission, are added inside `uses/`, whose mtime that changes)."""
    try:
        st = os.lstat(entry / USES_NAME)
    except OSError:
        return base
    return [*base, st.st_ino, st.st_mtime_ns]


def _package_names(env: CachedEnv) -> list[str]:
    names = [
        f"{p['name']} {p['version']}" if p["version"] else str(p["name"] or p["attr"] or "?") for p in env.packages
    ]
    request = env.record.request or {}
    if not names and request:
        names = [str(a) for a in request.get("attrs") or request.get("dependencies") or []] or [
            str(request.get("nix") or request.get("file") or "a Nix expression")
        ]
    return names


def build_summary(entry: Path) -> dict[str, Any]:
    """One cached environment as the page shows it: `builds/done/<key>/result.json` as the
    builder's inventory (`cutor-spool packages`) reads it, opened without following links."""
    with open_dir(entry) as fd:
        record = read_document(fd, RESULT_NAME, BUILD_RECORD_LIMIT, BuildRecord)
    if not isinstance(record, BuildRecord):
        return {
            **dict.fromkeys(BUILD_KEYS),
            "name": entry.name,
            "status": "unknown",
            "message": "no readable result.json",
        }
    env = CachedEnv(entry.name, entry, record, read_uses(entry))
    data = env.to_json()
    names = _package_names(env)
    return {
        "name": entry.name,
        "status": clip(data["status"], 40),
        "packages": clip(", ".join(names), 400) if names else None,
        "size": record.closure_size,
        "built_at": clip(record.built_at, 40),
        "last_used": data["last_used"],
        "uses": data["uses"],
        "build_time": record.build_time,
        "nixpkgs": clip(record.nixpkgs, 200),
        "system": clip(record.system, 40),
        "message": clip(data["message"]),
        "package_list": [
            [clip(p["name"], 100), clip(p["version"], 60), clip(p["path"], 300), p["size"]]
            for p in env.packages
            if p["path"]
        ],
    }


def packages(environments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every package of the cached environments, once per store path, as `cutor-spool packages`
    lists them: in how many environments, used by how many submissions (each submission uses one
    environment, so the environments' uses add up), and when last."""
    by_path: dict[str, dict[str, Any]] = {}
    for env in environments:
        if env["status"] != "ok":
            continue
        for name, version, path, size in env["package_list"] or []:
            item = by_path.setdefault(
                path,
                {"name": name, "version": version, "path": path, "size": size, "environments": 0, "uses": 0},
            )
            item["environments"] += 1
            item["uses"] += env["uses"] or 0
            if env["last_used"] and (item.get("last_used") or "") < env["last_used"]:
                item["last_used"] = env["last_used"]
    return sorted(
        ({"last_used": None, **p} for p in by_path.values()),
        key=lambda p: (p["name"] or "", p["version"] or "", p["path"]),
    )
