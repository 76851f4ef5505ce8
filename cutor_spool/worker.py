"""What every long-running worker (executor or builder) shares: identity, the heartbeat file in
`workers/`, the maintenance loop (touch leases, reap, heartbeat), signals and shutdown.

The loop of a worker thread is a short sequence, as in rq and dramatiq: stop check, take a
candidate, check readiness, claim, process, commit. Maintenance runs on its own thread every
`heartbeat` seconds so that a long stage never starves its lease.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cutor_spool import __version__
from cutor_spool.atomic import write_json
from cutor_spool.config import SpoolConfig
from cutor_spool.errors import CutorError, LeaseLost
from cutor_spool.layout import SpoolPaths
from cutor_spool.pipeline import Cancelled
from cutor_spool.watcher.clock import FsClock
from cutor_spool.watcher.queue import Claim, SpoolQueue, WorkerIdentity, iso

log = logging.getLogger(__name__)


@dataclass
class Active:
    claim: Claim
    cancel: Cancelled
    state: str = "claimed"
    since: float = field(default_factory=time.time)


class Maintenance:
    """Touches the leases of this worker's claims, writes its heartbeat file, reaps stale leases
    of every queue it is given, and runs any extra periodic job (the status page)."""

    def __init__(
        self,
        paths: SpoolPaths,
        config: SpoolConfig,
        identity: WorkerIdentity,
        kind: str,
        queues: list[SpoolQueue],
        info: dict[str, Any],
    ) -> None:
        self.paths, self.config, self.identity, self.kind = paths, config, identity, kind
        self.queues = queues
        self.info = info
        self.clock = FsClock(paths.tmp, identity.worker_id)
        self.active: dict[str, Active] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.periodic: list[Callable[[], None]] = []
        self.processed = 0
        self.started = time.time()
        self._thread = threading.Thread(target=self._loop, name=f"{kind}-maintenance", daemon=True)

    def start(self) -> None:
        self._safe_tick()
        self._thread.start()

    def shutdown(self) -> None:
        self.stop.set()
        self._thread.join(timeout=10)
        try:
            os.unlink(self.paths.workers / f"{self.identity.worker_id}.json")
        except OSError:
            pass
        self.clock.remove()

    def track(self, claim: Claim) -> Active:
        active = Active(claim, Cancelled())
        with self.lock:
            self.active[claim.path.name] = active
        return active

    def untrack(self, claim: Claim) -> None:
        with self.lock:
            self.active.pop(claim.path.name, None)
            self.processed += 1

    def _loop(self) -> None:
        while not self.stop.wait(self.config.heartbeat):
            self._safe_tick()

    def _safe_tick(self) -> None:
        try:
            self.tick()
        except CutorError as exc:  # a full disk, a flaky NFS server: try again next heartbeat
            log.warning("maintenance: %s", exc)
        except Exception:  # the maintenance thread must outlive any single failure
            log.exception("maintenance failed; retrying next heartbeat")

    def tick(self) -> None:
        with self.lock:
            current = list(self.active.values())
        for item in current:
            try:
                item.claim.heartbeat()
            except LeaseLost:
                if item.claim.finished:  # committed or handed back between our snapshot and now
                    continue
                log.error("%s: lease lost (reaped by another worker); stopping its work", item.claim.entry_id)
                item.cancel.set("lease lost")
            except CutorError as exc:
                log.warning("%s: heartbeat failed: %s", item.claim.entry_id, exc)
        self.write_heartbeat(current)
        now = self.clock.now()
        for queue in self.queues:
            queue.reap(now, self.config.lease_timeout)
        for job in self.periodic:
            try:
                job()
            except Exception:
                log.exception("periodic job failed")

    def write_heartbeat(self, current: list[Active]) -> None:
        data = {
            "worker": self.identity.worker_id,
            "kind": self.kind,
            "host": self.identity.host,
            "pid": self.identity.pid,
            "version": __version__,
            "started_at": iso(self.started),
            "heartbeat_at": iso(time.time()),
            "heartbeat_interval": self.config.heartbeat,
            "processed": self.processed,
            **self.info,
            "current": [
                {"id": a.claim.entry_id, "state": a.state, "since": iso(a.since), "attempt": a.claim.attempt}
                for a in current
            ],
        }
        try:
            write_json(self.paths.workers / f"{self.identity.worker_id}.json", data, fsync=False)
        except CutorError as exc:
            log.warning("cannot write heartbeat: %s", exc)


class Signals:
    """SIGTERM/SIGINT: first one stops taking work and lets current work finish (up to `grace`
    seconds, then hands it back); a second one hands back at once."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.hurry = threading.Event()

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        if self.stopping.is_set():
            log.warning("second %s: handing back current work now", signal.Signals(signum).name)
            self.hurry.set()
        else:
            log.warning("%s: finishing current work, taking no more", signal.Signals(signum).name)
            self.stopping.set()


def default_worker_id(kind: str, host: str) -> str:
    return f"{kind}-{host}-{os.getpid()}"


def spool_paths(spool: Path) -> SpoolPaths:
    paths = SpoolPaths(spool)
    if not paths.exists():
        paths.init(write_config=not paths.config.exists())
    return paths
