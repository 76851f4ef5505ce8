"""`cutor-spool executor`: claims submissions and runs them, until SIGTERM.

The generic worker (watcher/worker.py) decides what happens to a claim: misnamed, duplicate and
worn-out submissions, and "hand back and retry, then `error`" on a system failure. The executor
says how to run one submission (the pipeline), how to write its result (a `Reporter`), and whose a
sandbox failure is: one that a probe stage shows to be the host's (health.py) is handed back
uncounted, and the executor stops claiming until the host runs stages again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cutor_spool.config import BackendName, SpoolConfig
from cutor_spool.errors import CutorError, SandboxError
from cutor_spool.layout import SUBMISSIONS, SpoolPaths
from cutor_spool.runner.backend import make_backend
from cutor_spool.runner.cgroup_moves import check_in_background
from cutor_spool.runner.cgroups import CgroupHost
from cutor_spool.runner.health import SandboxHealth
from cutor_spool.runner.judge import generated
from cutor_spool.runner.pipeline import Environments, Pipeline
from cutor_spool.runner.results import Reporter
from cutor_spool.runner.sandbox import Backend
from cutor_spool.runner.slots import DEFAULT_STATE_DIR, SlotPool, pinned_cpus
from cutor_spool.watcher.callbacks import Outbox
from cutor_spool.watcher.claim import Claim
from cutor_spool.watcher.endings import Ending
from cutor_spool.watcher.maintenance import Active, Every
from cutor_spool.watcher.spool_fs import warn_if_slow
from cutor_spool.watcher.worker import QueueWorker

log = logging.getLogger(__name__)

PRUNE_GENERATED = 60.0  # seconds between two prunings of the generated inputs

# Makes the executor's source of Nix environments (the builder's, given by the command that starts
# the executor: the runner does not depend on the builder).
EnvironmentsFactory = Callable[[SpoolPaths, SpoolConfig, bool], Environments]


class Executor(QueueWorker[Reporter]):
    kind = "executor"
    queue_kind = SUBMISSIONS
    cancellable = True

    def __init__(
        self,
        spool: Path,
        *,
        concurrency: int = 1,
        poll: bool | None = None,
        backend: BackendName | None = None,
        state_dir: Path = DEFAULT_STATE_DIR,
        host: str | None = None,
        grace: float = 30.0,
        config: SpoolConfig | None = None,
        environments: EnvironmentsFactory | None = None,
    ) -> None:
        super().__init__(spool, concurrency=concurrency, poll=poll, host=host, grace=grace, config=config)
        self.backend_name = backend or self.config.backend
        self.state_dir = state_dir
        self.maintenance.info["backend"] = str(self.backend_name)
        self.backend: Backend | None = None
        self.pipeline: Pipeline | None = None
        self.environments: Environments | None = None
        self.make_environments = environments
        self.health = SandboxHealth(self._probe, self._health_changed)
        self.outbox = Outbox(
            self.paths, self.config.notify, worker=self.identity.worker_id, lease_timeout=self.config.lease_timeout
        )
        if self.outbox.enabled:
            self.maintenance.periodic.append(self.outbox.recover)
        # Workers of other queues that share this process's sandbox (runner/invocations/): set up
        # after this one, run in threads of their own, stopped by the same signals, and waited
        # for before the backend closes.
        self.companions: list[QueueWorker[Any]] = []
        self._companion_threads: list[threading.Thread] = []

    def _prune_generated(self) -> None:
        """The host's generated inputs, under their cap."""
        removed = generated.prune(self.state_dir / "generated", self.config.sandbox.generated_cache)
        if removed:
            log.info("generated inputs: %d least recently used removed (sandbox.generated_cache)", removed)

    def setup(self) -> None:
        box = self.config.sandbox
        self.backend = make_backend(self.backend_name, self.config, self.state_dir)
        cgroups = getattr(self.backend, "cgroups", None)  # bubblewrap's: stages move into cgroups it makes
        if isinstance(cgroups, CgroupHost):
            check_in_background(cgroups)  # a warning in the log if a move after a pause is slow here
        warn_if_slow(self.paths.root)  # and one if the spool's filesystem is (ext4 without a journal)
        cpus = pinned_cpus(box.pinning, self.backend.cpus())
        slots = SlotPool(
            uid_base=box.uid_base, count=box.slots, work_size=box.work_size, state_dir=self.state_dir, cpus=cpus
        )
        if cpus:
            self.maintenance.info["cpus"] = list(cpus)
            busiest = self.concurrency + sum(c.concurrency for c in self.companions)
            if busiest > len(cpus):
                log.warning(
                    "CPU pinning: up to %d slots at once on %d CPU(s): slots share CPUs (the least used first)",
                    busiest, len(cpus),
                )  # fmt: skip
        if self.environments is None and self.config.nix.nixpkgs and self.make_environments is not None:
            self.environments = self.make_environments(self.paths, self.config, self.poll)
        self.pipeline = Pipeline(self.config, self.backend, slots, environments=self.environments)
        backend = self.backend

        def sweep() -> None:
            backend.sweep(slots)

        try:  # what a dead worker left on this host; failing to clean it must not stop this one
            sweep()
        except Exception:
            log.exception("cleaning up after dead workers failed; retrying every heartbeat")
        self.maintenance.periodic.append(sweep)
        self.maintenance.periodic.append(Every(PRUNE_GENERATED, self._prune_generated))
        for companion in self.companions:
            companion.setup()
            companion.ready = True
        for companion in self.companions:
            thread = threading.Thread(
                target=companion.run, kwargs={"install_signals": False}, name=companion.kind, daemon=True
            )
            thread.start()
            self._companion_threads.append(thread)

    def describe(self) -> str:
        mode = "polling" if self.poll else "inotify + rescans"
        return f"spool {self.paths.root}, {self.concurrency} slot(s), backend {self.backend_name}, {mode}"

    def _probe(self) -> str | None:
        assert self.pipeline is not None
        return self.pipeline.probe()

    def _health_changed(self, state: str | None) -> None:
        if state is None:
            self.maintenance.info.pop("sandbox", None)
        else:
            self.maintenance.info["sandbox"] = state
        self.maintenance.beat()

    def may_claim(self) -> bool:
        return self.health.may_claim(self.signals.stopping)

    def _draining(self) -> None:
        for thread in self._companion_threads:  # they stop on the same signal, with the same grace
            thread.join()
        for companion in self.companions:
            if companion.crashed is not None and self.crashed is None:
                self.crashed = companion.crashed  # strict mode: `run` re-raises it

    def _stopped(self) -> None:
        if self.backend is not None:
            self.backend.close()

    def host_fault(self, exc: CutorError) -> str | None:
        if isinstance(exc, SandboxError) and self.health.host_is_at_fault():  # claiming is paused now
            return "this host cannot run stages"
        return None

    # -- one submission ----------------------------------------------------------------------
    def begin(self, claim: Claim, active: Active) -> Reporter:
        return Reporter(claim, self.identity, backend=str(self.backend_name), active=active)

    def handle(self, claim: Claim, job: Reporter, active: Active) -> None:
        job.start()
        assert self.pipeline is not None
        self.pipeline.process(claim.path, job, active.cancel)
        self.outbox.ended(claim.commit())

    def finish(self, claim: Claim, job: Reporter, ending: Ending) -> None:
        if not ending.ran:
            job.start()
        job.finish(ending.state, **ending.fields)
        self.outbox.ended(claim.commit(ending.name))

    def note(self, claim: Claim, job: Reporter, event: str, reason: str) -> None:
        job.event(event, reason=reason)
