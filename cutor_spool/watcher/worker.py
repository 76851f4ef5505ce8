"""The generic worker: what the worker of every queue (executor, builder, the next one) shares, and
the one place where what can go wrong with an entry is decided.

A work thread's loop is a short sequence, as in rq and dramatiq: stop check, take a candidate,
check readiness, claim, process. `_process` is a template method; a subclass fills in its hooks:

    misnamed (not an id)           finish(claim, job, Ending INVALID)
    its id already active or done  finish(claim, job, Ending INVALID, kept under a distinct name)
    claimed past max_attempts      finish(claim, job, Ending ERROR)   (the system failed it each time)
    claimed past max_lost_leases   finish(claim, job, Ending ERROR)   (its workers died holding it)
    otherwise                      handle(claim, job, active)          the work, then commit
  and what it raises:
    LeaseLost                      its work is discarded: another worker owns the entry now
    Shutdown                       handed back, the attempt not counted
    CutorError (SystemFailure...)  host_fault(exc)? handed back uncounted (the subclass pauses)
                                   else retry, then error: handed back counted, or past
                                   max_attempts finish(claim, job, Ending ERROR)
    anything else                  a programming error: counted in the heartbeat
                                   (`unexpected_errors`); then as a system failure, or, in
                                   strict mode, the worker stops and `run()` re-raises it

Strict mode (`CUTOR_SPOOL_STRICT=1`, which tests/conftest.py sets for in-process workers and the
processes it starts): a bug must fail the test that meets it, not burn a submission's attempts
or hand it back as if the system had failed. In production a bug never takes a worker down.

A new queue is a line in `layout.QUEUES` (its folder and attempt log) and a subclass with `kind`,
`queue_kind` and the hooks `setup`, `describe`, `begin`, `handle` and `finish` (`note`,
`host_fault`, `label`, `may_claim`, `_draining` and `_stopped` are optional). A worker made with
`companion_of=host` serves its queue inside the host's process, as the same worker to the spool.
Its `pilot` (watcher/pilot.py, shared with its companions) counts the process's claims and stops
it, as SIGTERM would but with nothing running, once `--exit-when-idle` or `--max-jobs` says so.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from cutor_spool.config import SpoolConfig, config_digest, load_config
from cutor_spool.errors import CancelRequested, CutorError, LeaseLost, Shutdown
from cutor_spool.layout import QUEUES, QueueKind
from cutor_spool.sharing import Sharing
from cutor_spool.watcher.cancel import clear_cancel, pending_cancel
from cutor_spool.watcher.claim import Claim
from cutor_spool.watcher.endings import Cause, Ending, refusal
from cutor_spool.watcher.finder import Finder
from cutor_spool.watcher.lifecycle import STRICT_ENV, Signals, spool_paths, strict_mode
from cutor_spool.watcher.lost import protect_from_oom
from cutor_spool.watcher.maintenance import Active, Every, Maintenance
from cutor_spool.watcher.notify import needs_polling
from cutor_spool.watcher.pilot import Pilot
from cutor_spool.watcher.priority import lane_value, marker_priority
from cutor_spool.watcher.prune import Retention
from cutor_spool.watcher.queue import SpoolQueue, WorkerIdentity
from cutor_spool.watcher.readiness import seconds_until_ready

log = logging.getLogger(__name__)

Job = TypeVar("Job")  # what a subclass keeps for one claim (the executor: its result's Reporter)


class QueueWorker(ABC, Generic[Job]):
    """A worker of one queue: an identity, the Finder, the maintenance thread (which reaps every
    queue of the spool), signals, the life cycle, the work loop, and `_process` (see the module's
    docstring). A subclass says how to set up, how to describe itself, and how to handle one
    entry."""

    kind: ClassVar[str]  # the worker's kind: "executor", "builder"
    queue_kind: ClassVar[QueueKind]  # the queue it takes work from
    cancellable: ClassVar[bool] = False  # honours `cutor-spool cancel` (cancel/<id>, watcher/cancel.py)

    def __init__(
        self,
        spool: Path,
        *,
        concurrency: int,
        poll: bool | None,
        host: str | None,
        grace: float,
        config: SpoolConfig | None,
        companion_of: QueueWorker[Any] | None = None,
    ) -> None:
        self.paths = spool_paths(spool)
        digest = config_digest(spool)  # before loading: a change between the two shows as stale
        self.config = config or load_config(spool)
        self.concurrency = concurrency
        self.poll = needs_polling(spool) if poll is None else poll
        self.grace = grace
        self.strict = strict_mode()
        self.crashed: Exception | None = None  # strict mode: the bug that stopped this worker
        # A companion serves another queue in its host worker's process (runner/invocations/): it
        # is the same worker to the spool (identity, leases, heartbeat, the maintenance thread,
        # which the host runs) and stops on the same signals.
        self.owns_maintenance = companion_of is None
        self.identity: WorkerIdentity = (
            companion_of.identity if companion_of is not None else WorkerIdentity.make(self.kind, host)
        )
        self.queue = self._queue(self.queue_kind)
        for directory in (self.queue.dirs.incoming, self.queue.dirs.active, self.queue.dirs.done):
            directory.mkdir(parents=True, exist_ok=True)  # `init` makes those of layout.QUEUES only
        interval = self.config.poll_interval if self.poll else self.config.rescan
        lanes = self._lane if self.queue_kind.prioritised else None
        self.finder = Finder(self.queue, poll=self.poll, interval=interval, priority=lanes)
        self.signals: Signals
        self.maintenance: Maintenance
        # One pilot per process (watcher/pilot.py): limits set by `--exit-when-idle`/`--max-jobs`.
        self.pilot: Pilot = companion_of.pilot if companion_of is not None else Pilot()
        if companion_of is not None:
            self.signals = companion_of.signals
            self.maintenance = companion_of.maintenance
        else:
            self.signals = Signals()
            others = [self._queue(kind) for kind in QUEUES if kind != self.queue_kind]
            self.maintenance = Maintenance(
                self.paths,
                self.config,
                self.identity,
                self.kind,
                [self.queue, *others],
                {"concurrency": concurrency, "poll": self.poll, "config": digest},
            )
            retention = self.config.retention
            if retention.older_than is not None:  # spool.yaml's `retention:`: every process prunes done/
                pruning = Retention(self.paths, older_than=retention.older_than, keep_failed=retention.keep_failed)
                self.maintenance.periodic.append(Every(retention.interval, pruning))
        if self.cancellable:
            self.maintenance.cancels = self.paths.cancels
        self.ready = False

    def _lane(self, name: str) -> int:
        return marker_priority(self.queue.dirs.incoming / name, lane_value(self.config.max_priority))

    def _queue(self, kind: QueueKind) -> SpoolQueue:
        sharing = Sharing.from_config(self.config.shared) if kind.private else None
        dirs = self.paths.queue(kind)
        return SpoolQueue(dirs, self.identity, log_name=kind.attempts_log, sharing=sharing, workers=self.paths.workers)

    # -- what a kind of worker says ------------------------------------------------------------
    @abstractmethod
    def setup(self) -> None:
        """Everything that may fail at start (sandbox, Nix, cgroups): before taking any work."""

    @abstractmethod
    def describe(self) -> str:
        """The start-up log line after the worker id."""

    @abstractmethod
    def begin(self, claim: Claim, active: Active) -> Job:
        """What this worker keeps for one claim, made before anything can fail (no I/O)."""

    @abstractmethod
    def handle(self, claim: Claim, job: Job, active: Active) -> None:
        """Works on one claimed entry (a valid id, the only claim of it, within its attempts) and
        commits it. Raises a `SystemFailure` when the system failed it; `active.cancel` says when
        to stop (lease lost, shutdown)."""

    @abstractmethod
    def finish(self, claim: Claim, job: Job, ending: Ending) -> None:
        """Finalises the entry as `ending` says (its state, reason and name in done/) and commits
        it; `ending.ran` tells a refusal before the work from giving up after it."""

    def note(self, claim: Claim, job: Job, event: str, reason: str) -> None:
        """Records a failure (`system_failure`, `host_failure`) in the entry, if it keeps events."""

    def host_fault(self, exc: CutorError) -> str | None:
        """Why this host, not the entry, is at fault for `exc` (then the entry goes back
        uncounted, and the subclass stops claiming until it heals), or None (the default)."""
        return None

    def label(self, name: str) -> str:
        return name

    def may_claim(self) -> bool:
        """False while this worker must not claim (it waits a little before returning it)."""
        return True

    def _draining(self) -> None:
        """Called once this worker's threads have finished, while the maintenance thread still
        touches leases (a host waits for its companions here)."""

    def _stopped(self) -> None:
        """Called once every thread has finished."""

    # -- life cycle --------------------------------------------------------------------------
    def run(self, *, install_signals: bool = True) -> None:
        """Works until SIGTERM; then lets current work finish for `grace` seconds (a second
        SIGTERM: at once) and hands back what is left. In strict mode, re-raises the bug that
        stopped it."""
        if install_signals:
            self.signals.install()
        protect_from_oom()  # the stages it starts raise their own (runner/launcher.py)
        if not self.ready:
            self.setup()
            self.ready = True
        log.info("%s %s: %s", self.kind, self.identity.worker_id, self.describe())
        if self.owns_maintenance:
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
            if self.owns_maintenance:  # the process's worker, not a companion
                self._pilot_check()
        self.finder.stop()
        deadline = time.monotonic() + self.grace
        while any(t.is_alive() for t in threads):
            if self.signals.hurry.is_set() or time.monotonic() > deadline:
                with self.maintenance.lock:
                    for active in self.maintenance.active.values():
                        active.cancel.set("shutdown")
            for thread in threads:
                thread.join(timeout=0.1)
        self._draining()
        if self.owns_maintenance:
            self.maintenance.shutdown()
        self._stopped()
        log.info("%s %s stopped", self.kind, self.identity.worker_id)
        if self.crashed is not None:
            raise self.crashed

    def stop(self) -> None:
        self.signals.stopping.set()

    def _pilot_check(self) -> None:
        """A pilot whose work is over stops as on SIGTERM, with nothing running to hand back."""
        reason = self.pilot.finished()
        if reason is not None:
            log.info("%s %s: %s; leaving", self.kind, self.identity.worker_id, reason)
            self.signals.stopping.set()

    # -- the loop ----------------------------------------------------------------------------
    def _work_loop(self) -> None:
        while not self.signals.stopping.is_set():
            if not self.may_claim():
                continue
            if self.pilot.closed():  # its jobs are taken: it waits for the others to end
                self.signals.stopping.wait(0.5)
                continue
            name = self.finder.take(timeout=0.5)
            if name is None or self.signals.stopping.is_set():
                continue
            try:
                self._try(name)
            except Exception as exc:  # a bug; a work thread must outlive anything one entry does to it
                log.exception("%s: unexpected failure while claiming; retrying later", self.label(name))
                self._bug(exc, name)
                self.finder.defer(name, 1.0)

    def _try(self, name: str) -> None:
        try:
            wait = seconds_until_ready(self.finder.incoming / name, self.maintenance.clock.now, self.config.settle)
        except FileNotFoundError:
            return  # claimed by someone else meanwhile
        except (OSError, CutorError) as exc:  # a full disk, a flaky NFS server
            log.warning("%s: cannot check readiness (%s); retrying", self.label(name), exc)
            self.finder.defer(name, 1.0)
            return
        if wait > 0:
            self.finder.defer(name, wait)
            return
        if not self.pilot.reserve():
            return  # a pilot that has taken its --max-jobs: the entry stays queued for others
        claimed = False
        try:
            claimed = self._claim(name)
        finally:
            self.pilot.settle(claimed)

    def _claim(self, name: str) -> bool:
        """Claims `name` and processes it; False if it was not ours to process."""
        try:
            claim = self.queue.claim(name)
        except LeaseLost as exc:  # reaped or taken between our rename and our lease: theirs now
            log.warning("%s: %s", self.label(name), exc)
            return False
        except CutorError as exc:
            log.error("%s: cannot claim: %s", self.label(name), exc)
            self.finder.defer(name, 1.0)
            return False
        if claim is None:
            return False
        self._process(claim)
        return True

    def _bug(self, exc: Exception, where: str) -> None:
        """Counts a programming error; in strict mode, stops this worker (`run` re-raises it)."""
        self.maintenance.unexpected(exc, where)
        if self.strict:
            log.critical("strict mode (%s): stopping on a programming error", STRICT_ENV)
            if self.crashed is None:
                self.crashed = exc
            self.signals.stopping.set()

    # -- one claim: the template -------------------------------------------------------------
    def _process(self, claim: Claim) -> None:
        active = self.maintenance.track(claim)
        job = self.begin(claim, active)
        label = self.label(claim.entry_id)
        try:
            config = self.config
            ending = refusal(claim, self.queue, config.max_attempts, config.max_lost_leases) or self._cancel_requested(
                claim
            )
            if ending is None:
                self.handle(claim, job, active)
            else:
                log.info("%s: %s", label, ending.reason)
                self.finish(claim, job, ending)
        except CancelRequested:
            ending = self._cancel_requested(claim, started=True)
            log.info("%s: %s", label, ending.reason if ending else "cancelled")
            self.finish(claim, job, ending or Ending(Cause.CANCELLED, "cancelled on request", started=True))
        except LeaseLost as exc:
            log.error("%s: %s; its work is discarded (another worker owns it now)", label, exc)
        except Shutdown:
            log.warning("%s: handed back on shutdown", label)
            claim.release("worker shutting down")
        except CutorError as exc:
            log.error("%s: attempt %d failed: %s", label, claim.attempt, exc)
            self._failed(claim, job, exc)
        except Exception as exc:
            log.exception("%s: unexpected failure (a bug)", label)
            self._bug(exc, claim.entry_id)
            if self.strict:  # not the entry's fault: back to the queue, uncounted
                claim.release(f"the worker stopped on a programming error: {type(exc).__name__}")
            else:
                self._retry(claim, job, f"unexpected {type(exc).__name__}: {exc}")
        finally:
            self.maintenance.untrack(claim)
            if self.cancellable and claim.committed:  # it ended: a request for it is spent
                clear_cancel(self.paths.cancels, claim.entry_id, claim.submitter)

    def _cancel_requested(self, claim: Claim, *, started: bool = False) -> Ending | None:
        if not self.cancellable:
            return None
        request = pending_cancel(self.paths.cancels, claim.entry_id, claim.submitter)
        if request is None:
            return None
        reason = f"cancelled by {request.by}" + (" while it ran" if started else " before it ran")
        return Ending(Cause.CANCELLED, reason, {"cancelled_by": request.by}, started=started)

    def _failed(self, claim: Claim, job: Job, exc: CutorError) -> None:
        reason = str(exc)
        host = self.host_fault(exc)
        if host is None:
            self._retry(claim, job, reason)
            return
        # The host cannot do this work, whatever the entry: back to the queue, uncounted (a
        # hand-back that fails logs why; the lease then expires as usual).
        self._note(claim, job, "host_failure", reason)
        claim.release(f"{host}: {reason}")

    def _retry(self, claim: Claim, job: Job, reason: str) -> None:
        """Retry, then error: the rule for a failure of the system, for every queue, here once.
        The claim goes back with its attempt counted, or past `max_attempts` it is finished as
        an error. If even that fails, the lease expires and the reaper hands it back."""
        self._note(claim, job, "system_failure", reason)
        try:
            if claim.counted_attempts >= self.config.max_attempts:
                self.finish(claim, job, Ending(Cause.GAVE_UP, f"attempt {claim.attempt}: {reason}"))
            elif not claim.release(reason, counts=True):
                log.error("%s: could not hand back; the lease will expire", self.label(claim.entry_id))
        except (CutorError, OSError, ValueError) as exc:
            log.error("%s: cannot record the failure (%s); the lease will expire", self.label(claim.entry_id), exc)

    def _note(self, claim: Claim, job: Job, event: str, reason: str) -> None:
        try:
            self.note(claim, job, event, reason)
        except CutorError as exc:
            log.error("%s: cannot record the failure (%s)", self.label(claim.entry_id), exc)
