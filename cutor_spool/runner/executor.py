"""`cutor-spool executor`: claims submissions and runs them, until SIGTERM.

System failures (`SystemFailure`: the sandbox, the builder, the spool itself) are mapped to
"hand back and retry, then `error`" here, in `_process`, and nowhere else. A submission that kills
its worker every time is stopped the same way: each claim is logged in its attempt log, and past
`max_attempts` it ends in `error` instead of poisoning the queue. A sandbox failure that a probe
stage shows to be the host's (health.py) is handed back uncounted, and the executor stops claiming
until the host runs stages again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from cutor_spool.config import BackendName, SpoolConfig
from cutor_spool.documents.states import ATTEMPTS_LOG, State
from cutor_spool.errors import LeaseLost, SandboxError, Shutdown, SystemFailure
from cutor_spool.layout import SpoolPaths
from cutor_spool.runner.backend import Backend, make_backend
from cutor_spool.runner.health import SandboxHealth
from cutor_spool.runner.pipeline import Environments, Pipeline
from cutor_spool.runner.results import Reporter
from cutor_spool.runner.slots import DEFAULT_STATE_DIR, SlotPool
from cutor_spool.watcher.ids import duplicate_name
from cutor_spool.watcher.queue import Claim
from cutor_spool.watcher.worker import Active, QueueWorker

log = logging.getLogger(__name__)

# Makes the executor's source of Nix environments (the builder's, given by the command that starts
# the executor: the runner does not depend on the builder).
EnvironmentsFactory = Callable[[SpoolPaths, SpoolConfig, bool], Environments]


class Executor(QueueWorker):
    kind = "executor"

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
        super().__init__(
            spool, work=lambda p: p.submissions, work_log=ATTEMPTS_LOG, reap=lambda p: p.builds,
            reap_log="attempts.jsonl", concurrency=concurrency, poll=poll, host=host, grace=grace, config=config,
        )  # fmt: skip
        self.backend_name = backend or self.config.backend
        self.state_dir = state_dir
        self.maintenance.info["backend"] = str(self.backend_name)
        self.backend: Backend | None = None
        self.pipeline: Pipeline | None = None
        self.environments: Environments | None = None
        self.make_environments = environments
        self.health = SandboxHealth(self._probe, self._health_changed)

    def setup(self) -> None:
        box = self.config.sandbox
        slots = SlotPool(uid_base=box.uid_base, count=box.slots, work_size=box.work_size, state_dir=self.state_dir)
        self.backend = make_backend(self.backend_name, self.config, self.state_dir)
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

    def _stopped(self) -> None:
        if self.backend is not None:
            self.backend.close()

    def _process(self, claim: Claim) -> None:
        """The one place where failures of the system become "hand back, retry, then error"."""
        active = self.maintenance.track(claim)
        reporter = Reporter(
            claim, self.identity, backend=str(self.backend_name), on_state=lambda state: setattr(active, "state", state)
        )
        try:
            self._handle(claim, reporter, active)
        except LeaseLost as exc:
            log.error("%s: %s; its work is discarded (another worker owns it now)", claim.entry_id, exc)
        except Shutdown:
            log.warning("%s: handed back on shutdown", claim.entry_id)
            claim.release("worker shutting down")
        except SystemFailure as exc:
            log.error("%s: attempt %d failed: %s", claim.entry_id, claim.attempt, exc)
            if isinstance(exc, SandboxError) and self.health.host_is_at_fault():
                self._host_failure(claim, reporter, str(exc))
            else:
                self._system_failure(claim, reporter, str(exc))
        except Exception as exc:  # a bug is a system failure too: never let it take the worker down
            log.exception("%s: unexpected failure", claim.entry_id)
            self._system_failure(claim, reporter, f"unexpected {type(exc).__name__}: {exc}")
        finally:
            self.maintenance.untrack(claim)

    def _handle(self, claim: Claim, reporter: Reporter, active: Active) -> None:
        if claim.original_name != claim.entry_id:
            reporter.start()
            reporter.finish(
                State.INVALID,
                original_name=claim.original_name,
                errors=[
                    {
                        "where": "id",
                        "message": f"{claim.original_name!r} is not a valid id: use "
                        "letters, digits, '_' and '-', at most 128, starting with a letter or digit, "
                        "and a directory",
                    }
                ],
            )
            claim.commit()
            return
        if self.queue.known_elsewhere(claim):
            final = duplicate_name(claim.entry_id, claim.token)
            reporter.start()
            reporter.finish(
                State.INVALID,
                duplicate_of=claim.entry_id,
                id=final,
                errors=[
                    {
                        "where": "id",
                        "message": f"{claim.entry_id!r} is already active or done; this duplicate was "
                        f"not run and is kept as done/{final}",
                    }
                ],
            )
            claim.commit(final)
            return
        if claim.counted_attempts > self.config.max_attempts:
            reporter.start()
            reporter.finish(
                State.ERROR,
                reason=f"gave up after {claim.counted_attempts - 1} attempt(s) that did "
                "not finish (a worker died, lost its lease, or the system failed each time)",
            )
            claim.commit()
            return
        reporter.start()
        assert self.pipeline is not None
        self.pipeline.process(claim.path, reporter, active.cancel)
        claim.commit()

    @staticmethod
    def _record_failure(claim: Claim, reporter: Reporter, event: str, reason: str) -> None:
        try:
            reporter.event(event, reason=reason)
        except (LeaseLost, SystemFailure) as exc:
            log.error("%s: cannot record the failure (%s)", claim.entry_id, exc)

    def _host_failure(self, claim: Claim, reporter: Reporter, reason: str) -> None:
        """The host cannot run stages, whatever the submission: back to the queue, uncounted
        (a hand-back that fails logs why; the lease then expires as usual)."""
        self._record_failure(claim, reporter, "host_failure", reason)
        claim.release(f"this host cannot run stages: {reason}")

    def _system_failure(self, claim: Claim, reporter: Reporter, reason: str) -> None:
        def give_up() -> None:
            reporter.finish(State.ERROR, reason=f"attempt {claim.attempt}: {reason}")
            claim.commit()

        self._record_failure(claim, reporter, "system_failure", reason)
        self._retry_or_give_up(claim, reason, give_up)
