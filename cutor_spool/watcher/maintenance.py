"""A worker's maintenance: what must happen every `heartbeat` seconds whatever the work threads
are doing, on a thread of its own so that a long stage never starves its lease.

Each tick touches the leases of this worker's claims (a lease it finds gone cancels that claim's
work), writes the heartbeat file `workers/<worker-id>.json`, reaps the stale leases of every queue
it is given, and runs the periodic jobs (the status page, sweeping what dead workers left).

The heartbeat also counts the worker's programming errors apart (`unexpected_errors`, with the last
one's type and message in `last_unexpected_error`): an exception that is not one of the error
tree's (errors.py) is a bug, and an operator sees it here and in metrics.prom instead of in a
submission's burnt attempts. One in maintenance itself is counted and logged, never re-raised, not
even in strict mode: no entry's fate depends on it, and the next tick tries again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cutor_spool import __version__
from cutor_spool.atomic import write_json
from cutor_spool.config import SpoolConfig, config_digest
from cutor_spool.documents.heartbeat import CurrentWork, Heartbeat
from cutor_spool.errors import CutorError, LeaseLost
from cutor_spool.layout import SpoolPaths
from cutor_spool.watcher.cancel import CANCELLED, Cancelled, pending_cancel
from cutor_spool.watcher.claim import Claim, iso
from cutor_spool.watcher.clock import FsClock
from cutor_spool.watcher.queue import SpoolQueue, WorkerIdentity

log = logging.getLogger(__name__)

MESSAGE_CHARS = 500  # of the last unexpected error's message, in the heartbeat


@dataclass
class Every:
    """A periodic job run at most once per `interval` seconds (the maintenance thread ticks at
    every heartbeat): the workers' retention, the executors' housekeeping of payments and of the
    generated inputs."""

    interval: float
    job: Callable[[], object]
    _next: float = 0.0

    def __call__(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.interval
        self.job()


@dataclass
class Active:
    claim: Claim
    cancel: Cancelled
    state: str = "claimed"
    since: float = field(default_factory=time.time)
    cpu: int | None = None  # with CPU pinning, its slot's CPU
    helper_cpus: list[int] = field(default_factory=list)  # and its other slots' (an interactor's)


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
        self.cancels: Path | None = None
        self._config_seen = self.info.get("config")  # where cancel requests are, for a worker that honours them
        self.processed = 0
        self.started = time.time()
        # Present from the start, so that `info` never changes size while a heartbeat is written
        # from it on another thread, and metrics.prom has a zero before the first error.
        self.info.setdefault("unexpected_errors", 0)
        self.info.setdefault("last_unexpected_error", None)
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
        except Exception as exc:  # a bug: the maintenance thread must outlive it, and count it
            log.exception("maintenance failed; retrying next heartbeat")
            self.unexpected(exc, "maintenance")

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
            if self.cancels is not None and pending_cancel(self.cancels, item.claim.entry_id, item.claim.submitter):
                log.info("%s: cancel requested; stopping its work", item.claim.entry_id)
                item.cancel.set(CANCELLED)
        self._notice_config_change()
        self.write_heartbeat(current)
        now = self.clock.now()
        for queue in self.queues:
            queue.reap(now, self.config.lease_timeout)
        for job in self.periodic:
            try:
                job()
            except CutorError as exc:
                log.warning("periodic job failed: %s", exc)
            except Exception as exc:
                log.exception("periodic job failed")
                self.unexpected(exc, "periodic job")

    def unexpected(self, exc: BaseException, where: str) -> None:
        """Counts a programming error (see the module's docstring) and shows it at once."""
        with self.lock:
            self.info["unexpected_errors"] = int(self.info["unexpected_errors"]) + 1
            self.info["last_unexpected_error"] = {
                "type": type(exc).__name__,
                "message": str(exc)[:MESSAGE_CHARS],
                "where": where,
                "at": iso(time.time()),
            }
        self.beat()

    def beat(self) -> None:
        """The heartbeat file now, not at the next tick (after `info` changed)."""
        with self.lock:
            current = list(self.active.values())
        self.write_heartbeat(current)

    def _notice_config_change(self) -> None:
        """Says once per change that spool.yaml is not what this worker runs with (it applies a new
        one when restarted; `cutor-spool status` and `list` warn too)."""
        digest = config_digest(self.paths.root)
        if digest is not None and digest != self.info.get("config") and digest != self._config_seen:
            log.warning("spool.yaml changed since this worker started; restart it to apply the change")
        self._config_seen = digest

    def write_heartbeat(self, current: list[Active]) -> None:
        try:
            heartbeat = Heartbeat(
                worker=self.identity.worker_id,
                kind=self.kind,
                host=self.identity.host,
                pid=self.identity.pid,
                version=__version__,
                started_at=iso(self.started),
                heartbeat_at=iso(time.time()),
                heartbeat_interval=self.config.heartbeat,
                processed=self.processed,
                **self.info,
                current=[
                    CurrentWork(
                        id=a.claim.entry_id,
                        state=a.state,
                        since=iso(a.since),
                        attempt=a.claim.attempt,
                        cpu=a.cpu,
                        helper_cpus=list(a.helper_cpus) or None,
                    )
                    for a in current
                ],
            )
        except ValidationError as exc:  # a field the document does not declare: a bug, but never stop reaping
            log.error("heartbeat not written: %s", exc)
            return
        try:
            write_json(self.paths.workers / f"{self.identity.worker_id}.json", heartbeat.dump(), fsync=False)
        except CutorError as exc:
            log.warning("cannot write heartbeat: %s", exc)
