"""The invocations queue's worker: deployments' builds and invocations, inside `cutor-spool executor`.

One process, one sandbox. The executor's process serves both queues: the submissions' `Executor`
and this `InvocationWorker`, each a `QueueWorker` with its own finder, claims and work threads,
share the executor's backend, slot pool, pipeline, Nix environments, host health, signals, and its
identity, heartbeat and maintenance thread (`companion_of`: to the spool they are one worker). The
executor sets this worker up after itself (`Executor.companions`), runs it in a thread of its own,
waits for it before its maintenance stops, and closes the shared backend after both. So an operator
still runs one command per host, a host's slot uids are handed out by one pool (and, across
processes, by its per-uid locks), and a broken host stops both queues at once.

What happens to one entry:

    request.json missing or malformed, custody refused   invalid
    kind build    verify the deployment, build it (build.py)   done (ok | compile_error ...) | invalid
    kind invoke   verify, check, run it (run.py)               done (the run's outcome) | invalid
                  its build still pending                      handed back uncounted
    a failure of the system (the generic worker)               retried, then error

A build that ends `invalid` or, past its attempts, `error` also writes its deployment's build
record `failed`, so that its invocations do not wait for it for ever.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from cutor_spool.atomic import read_bytes
from cutor_spool.deployments import idempotency
from cutor_spool.deployments.cid import parse_cid
from cutor_spool.deployments.errors import DeploymentError, UnknownCid
from cutor_spool.deployments.keys import read_server_private
from cutor_spool.deployments.requests import REQUEST, read_build_record
from cutor_spool.deployments.spec import Deployment, load_deployment
from cutor_spool.deployments.store import Store
from cutor_spool.documents.deployment import DeploymentState, InvocationRequest, RequestKind
from cutor_spool.documents.states import State
from cutor_spool.errors import ConfigError, CutorError
from cutor_spool.layout import INVOCATIONS
from cutor_spool.runner.invocations.build import build, record_build
from cutor_spool.runner.invocations.context import Refused, Services
from cutor_spool.runner.invocations.direct import DirectDoor
from cutor_spool.runner.invocations.payment import HOUSEKEEPING, Housekeeping, release
from cutor_spool.runner.invocations.run import BuildPending, invoke
from cutor_spool.runner.invocations.warm import WarmPool
from cutor_spool.runner.results import Reporter
from cutor_spool.runner.tree import Problem
from cutor_spool.watcher.claim import Claim
from cutor_spool.watcher.endings import Ending
from cutor_spool.watcher.maintenance import Active, Every
from cutor_spool.watcher.worker import QueueWorker

if TYPE_CHECKING:
    from cutor_spool.runner.executor import Executor

log = logging.getLogger(__name__)

MAX_REQUEST = 1 << 20  # request.json: headers are capped at 64 KiB, the body is a file of its own


@dataclass
class InvocationJob:
    reporter: Reporter
    request: InvocationRequest | None = None


class InvocationWorker(QueueWorker[InvocationJob]):
    kind = "invoker"
    queue_kind = INVOCATIONS

    def __init__(self, executor: Executor, *, concurrency: int, server_key: Path | None = None) -> None:
        super().__init__(
            executor.paths.root,
            concurrency=concurrency,
            poll=executor.poll,
            host=executor.identity.host,
            grace=executor.grace,
            config=executor.config,
            companion_of=executor,  # one process: its identity, heartbeat, maintenance, signals
        )
        self.executor = executor
        key = server_key or self.config.deployments.server_key
        self.server_key_path = Path(key) if key else None
        self.services: Services | None = None
        self.door: DirectDoor | None = None

    def setup(self) -> None:
        """After the executor's setup: its pipeline is this worker's."""
        pipeline = self.executor.pipeline
        assert pipeline is not None, "the executor sets up first"
        key = None
        if self.server_key_path is not None:
            try:
                key = read_server_private(self.server_key_path)
            except DeploymentError as exc:
                raise ConfigError(f"the server key: {exc}") from exc
        self.services = Services(
            paths=self.paths,
            config=self.config,
            store=Store(self.paths.root),
            pipeline=pipeline,
            server_key=key,
            staging=self.executor.state_dir / "deployments",
        )
        # -- warm servers (warm.py): a pool of instances, each holding a slot the queues leave free
        spare = self.config.sandbox.slots - self.executor.concurrency - self.concurrency
        self.services.warm = WarmPool(pipeline, capacity=spare)
        # -- the direct door (direct.py): gateways on this host reach the live instances directly
        worker, state_dir = self.executor.identity.worker_id, self.executor.state_dir
        self.door = DirectDoor(self.services, self.services.warm, worker_id=worker, state_dir=state_dir)
        self.door.start()
        ttl, paths = self.config.deployments.idempotency_ttl, self.paths
        keys = functools.partial(idempotency.prune, paths, ttl=ttl)
        housekeeping = Housekeeping(self.services.ledger, self.services.nonces, keys, hold_ttl=ttl)
        self.maintenance.periodic.append(Every(HOUSEKEEPING, housekeeping))

    def _draining(self) -> None:
        if self.door is not None:  # before the warm servers: its requests end, its blocks settled
            self.door.close()
        if self.services is not None and self.services.warm is not None:  # warm servers: stopped
            self.services.warm.close()

    def describe(self) -> str:
        key = "a server key" if self.server_key_path else "no server key (sealed env cannot open)"
        return f"deployments of spool {self.paths.root}, {self.concurrency} slot(s), {key}"

    def may_claim(self) -> bool:
        return self.executor.may_claim()

    def host_fault(self, exc: CutorError) -> str | None:
        return self.executor.host_fault(exc)

    # -- one entry ---------------------------------------------------------------------------
    def begin(self, claim: Claim, active: Active) -> InvocationJob:
        return InvocationJob(Reporter(claim, self.identity, backend=str(self.executor.backend_name), active=active))

    def handle(self, claim: Claim, job: InvocationJob, active: Active) -> None:
        assert self.services is not None
        job.reporter.start()
        try:
            job.request = self._request(claim)
            deployment = self._deployment(job.request.deployment)
            if job.request.kind == RequestKind.BUILD:
                staging = self.services.staging_for(claim.path.name)
                build(self.services, deployment, claim.entry_id, staging, job.reporter, active.cancel)
            else:
                invoke(self.services, claim, job.request, deployment, job.reporter, active.cancel)
        except Refused as refused:
            self._refuse(job, refused.problems)
        except BuildPending as pending:
            claim.release(str(pending))  # uncounted: nothing is wrong with it
            return
        claim.commit()

    def _request(self, claim: Claim) -> InvocationRequest:
        if claim.custody_failure is not None:  # nothing of it is read while its client can change it
            raise Refused.because("owner", claim.custody_failure)
        try:
            data = json.loads(read_bytes(claim.path / REQUEST, MAX_REQUEST, beneath=claim.anchor))
        except FileNotFoundError:
            raise Refused.because(REQUEST, "is missing: every invocation needs one") from None
        except (OSError, CutorError, ValueError, RecursionError) as exc:  # deep nesting: RecursionError
            raise Refused.because(REQUEST, f"cannot be read: {str(exc)[:200]}") from None
        try:
            return InvocationRequest.model_validate(data)
        except ValidationError as exc:
            where = ", ".join(".".join(map(str, e["loc"])) or "(top level)" for e in exc.errors(include_url=False))
            raise Refused.because(REQUEST, f"is not a valid request ({where})") from None

    def _deployment(self, cid: str) -> Deployment:
        assert self.services is not None
        store = self.services.store
        try:
            return load_deployment(store, cid, maximum=self.config.limits.resolved_maximum())
        except UnknownCid as exc:
            if not store.has(cid):
                raise Refused.because("deployment", f"unknown CID {cid}: no such deployment in this spool") from None
            raise Refused.because("deployment", str(exc)) from None  # its bundle is missing
        except DeploymentError as exc:  # not a CID, tampered, a bad signature, terms not accepted
            raise Refused.because("deployment", f"{cid} cannot be used: {exc}") from None

    def _refuse(self, job: InvocationJob, problems: list[Problem]) -> None:
        job.reporter.finish(
            State.INVALID,
            errors=[p.to_json() for p in problems],
            message="; ".join(map(str, problems[:5])),
        )
        self._build_failed(job, "; ".join(map(str, problems[:5])))

    def _build_failed(self, job: InvocationJob, reason: str) -> None:
        request = job.request
        if request is None or request.kind != RequestKind.BUILD or self.services is None:
            return
        entry_id = job.reporter.claim.entry_id
        try:
            parse_cid(request.deployment)  # the record's directory is named by it: never a path
            earlier = read_build_record(self.services.paths, request.deployment)
            if earlier is None or earlier.state == DeploymentState.READY:
                return  # not deployed here (a client's stray build) or built by another entry: left alone
            record_build(self.services, request.deployment, entry_id, DeploymentState.FAILED, reason=reason)
        except (OSError, CutorError, ValueError) as exc:  # not a CID: there is no record to write
            log.warning("%s: cannot record the failed build: %s", entry_id, exc)

    def finish(self, claim: Claim, job: InvocationJob, ending: Ending) -> None:
        if not ending.ran:
            job.reporter.start()
        job.reporter.finish(ending.state, **ending.fields)
        if ending.state == State.ERROR and self.services is not None:  # the system gave up: not charged
            release(self.services.ledger, claim.entry_id, f"the system gave up on it: {ending.reason}")
        if ending.state == State.ERROR:  # gave up: its invocations must not wait for it for ever
            if job.request is None:
                try:
                    job.request = self._request(claim)
                except Refused:
                    pass
            self._build_failed(job, ending.reason)
        claim.commit(ending.name)

    def note(self, claim: Claim, job: InvocationJob, event: str, reason: str) -> None:
        job.reporter.event(event, reason=reason)
