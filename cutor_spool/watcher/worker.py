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
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import ValidationError

from cutor_spool import __version__
from cutor_spool.atomic import write_json
from cutor_spool.config import SpoolConfig, load_config
from cutor_spool.documents.heartbeat import CurrentWork, Heartbeat
from cutor_spool.errors import CutorError, LeaseLost, SystemFailure
from cutor_spool.layout import QueueDirs, SpoolPaths
from cutor_spool.watcher.cancel import Cancelled
from cutor_spool.watcher.clock import FsClock
from cutor_spool.watcher.finder import Finder
from cutor_spool.watcher.notify import needs_polling
from cutor_spool.watcher.queue import Claim, SpoolQueue, WorkerIdentity, iso
from cutor_spool.watcher.readiness import seconds_until_ready

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

    def beat(self) -> None:
        """The heartbeat file now, not at the next tick (after `info` changed)."""
        with self.lock:
            current = list(self.active.values())
        self.write_heartbeat(current)

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
                    CurrentWork(id=a.claim.entry_id, state=a.state, since=iso(a.since), attempt=a.claim.attempt)
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
    # Absolute: paths are handed to Nix (file:// URLs), written into records, and must not change
    # meaning with the working directory.
    paths = SpoolPaths(spool.absolute())
    if not paths.exists():
        paths.init(write_config=not paths.config.exists())
    return paths


class QueueWorker(ABC):
    """What an executor and a builder share: an identity, one queue to take work from (and
    another whose stale leases it reaps too), the Finder, the maintenance thread, signals, the
    life cycle, and the work loop. A subclass says how to set up, how to describe itself, and how
    to process one claim (`_process`, the one place its system failures become "hand back,
    retry, then error")."""

    kind: ClassVar[str]

    def __init__(
        self,
        spool: Path,
        *,
        work: Callable[[SpoolPaths], QueueDirs],
        work_log: str,
        reap: Callable[[SpoolPaths], QueueDirs],
        reap_log: str,
        concurrency: int,
        poll: bool | None,
        host: str | None,
        grace: float,
        config: SpoolConfig | None,
    ) -> None:
        self.paths = spool_paths(spool)
        self.config = config or load_config(spool)
        self.identity = WorkerIdentity.make(self.kind, host)
        self.concurrency = concurrency
        self.poll = needs_polling(spool) if poll is None else poll
        self.grace = grace
        self.queue = SpoolQueue(work(self.paths), self.identity, log_name=work_log)
        interval = self.config.poll_interval if self.poll else self.config.rescan
        self.finder = Finder(self.queue, poll=self.poll, interval=interval)
        self.signals = Signals()
        other = SpoolQueue(reap(self.paths), self.identity, log_name=reap_log)
        self.maintenance = Maintenance(
            self.paths,
            self.config,
            self.identity,
            self.kind,
            [self.queue, other],
            {"concurrency": concurrency, "poll": self.poll},
        )
        self.ready = False

    # -- what a kind of worker says ------------------------------------------------------------
    @abstractmethod
    def setup(self) -> None:
        """Everything that may fail at start (sandbox, Nix, cgroups): before taking any work."""

    @abstractmethod
    def describe(self) -> str:
        """The start-up log line after the worker id."""

    @abstractmethod
    def _process(self, claim: Claim) -> None: ...

    def label(self, name: str) -> str:
        return name

    def _stopped(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Called once every thread has finished."""

    # -- life cycle --------------------------------------------------------------------------
    def run(self, *, install_signals: bool = True) -> None:
        """Works until SIGTERM; then lets current work finish for `grace` seconds (a second
        SIGTERM: at once) and hands back what is left."""
        if install_signals:
            self.signals.install()
        if not self.ready:
            self.setup()
            self.ready = True
        log.info("%s %s: %s", self.kind, self.identity.worker_id, self.describe())
        self.maintenance.start()
        self.finder.start()
        threads = [
            threading.Thread(target=self._work_loop, name=f"{self.kind}-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        for thread in threads:
            thread.start()
        # A timed wait: Python runs signal handlers in the main thread only, and only once it
        # wakes up; a SIGTERM the kernel hands to another thread would otherwise wait forever.
        while not self.signals.stopping.wait(0.5):
            pass
        self.finder.stop()
        deadline = time.monotonic() + self.grace
        while any(t.is_alive() for t in threads):
            if self.signals.hurry.is_set() or time.monotonic() > deadline:
                with self.maintenance.lock:
                    for active in self.maintenance.active.values():
                        active.cancel.set("shutdown")
            for thread in threads:
                thread.join(timeout=0.1)
        self.maintenance.shutdown()
        self._stopped()
        log.info("%s %s stopped", self.kind, self.identity.worker_id)

    def stop(self) -> None:
        self.signals.stopping.set()

    def _retry_or_give_up(self, claim: Claim, reason: str, give_up: Callable[[], None]) -> None:
        """The rule for a system failure, for every kind of worker: hand the claim back, the
        attempt counted, or past `max_attempts` call `give_up` (which finalises it as an error).
        If even that fails, the lease expires and the reaper hands it back."""
        try:
            if claim.counted_attempts >= self.config.max_attempts:
                give_up()
            elif not claim.release(reason, counts=True):
                log.error("%s: could not hand back; the lease will expire", self.label(claim.entry_id))
        except (LeaseLost, SystemFailure, OSError, ValueError) as exc:
            log.error("%s: cannot record the failure (%s); the lease will expire", self.label(claim.entry_id), exc)

    # -- the loop ----------------------------------------------------------------------------
    def may_claim(self) -> bool:
        """False while this worker must not claim (it waits a little before returning it)."""
        return True

    def _work_loop(self) -> None:
        while not self.signals.stopping.is_set():
            if not self.may_claim():
                continue
            name = self.finder.take(timeout=0.5)
            if name is None or self.signals.stopping.is_set():
                continue
            try:
                self._try(name)
            except Exception:  # a worker thread must outlive anything one entry does to it
                log.exception("%s: unexpected failure while claiming; retrying later", self.label(name))
                self.finder.defer(name, 1.0)

    def _try(self, name: str) -> None:
        try:
            wait = seconds_until_ready(self.finder.incoming / name, self.maintenance.clock.now, self.config.settle)
        except FileNotFoundError:
            return  # claimed by someone else meanwhile
        except (OSError, SystemFailure) as exc:  # a full disk, a flaky NFS server
            log.warning("%s: cannot check readiness (%s); retrying", self.label(name), exc)
            self.finder.defer(name, 1.0)
            return
        if wait > 0:
            self.finder.defer(name, wait)
            return
        try:
            claim = self.queue.claim(name)
        except LeaseLost as exc:  # reaped or taken between our rename and our lease: theirs now
            log.warning("%s: %s", self.label(name), exc)
            return
        except SystemFailure as exc:
            log.error("%s: cannot claim: %s", self.label(name), exc)
            self.finder.defer(name, 1.0)
            return
        if claim is not None:
            self._process(claim)
