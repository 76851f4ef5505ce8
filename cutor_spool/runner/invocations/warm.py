"""Warm servers: a deployment's long-running program, started once, answering its invocations.

A deployment with `server:` (deployments/manifest.py) instead of `run:` is served by an instance
of its program kept in the executor process's `WarmPool`, keyed by the deployment's CID: an
instance serves one deployment only, never another. The first invocation starts it (the cold
start: a slot of its own, held while it lives, the compiled work area unpacked into its /work, the
Nix environment, then the program as a stage in the same bubblewrap sandbox as a run stage, the
same uid, seccomp filter and limits, but the wall clock), and waits until it accepts connections
on `$CUTOR_SOCKET` (`/work/.cutor.sock`), at most `ready_timeout`. Every invocation is then one
HTTP/1.1 exchange on that socket (warm_http.py), one at a time per instance, with the run stage's
wall clock as its deadline.

An instance is stopped (its whole cgroup killed, its slot released) when it has been idle for
`idle_timeout`, after `max_requests`, when a request runs out of time or spends more CPU than a
run stage may, when it breaks the exchange, when it ends by itself (its exit, the memory limit,
its output flooding past the cap), and when the executor stops. A broken instance answers the
request in flight with a 502 (504 when out of time); the next request starts a new one.

What a charge needs is in each invocation's `result/warm.json`: its wall time and the CPU the
instance's cgroup spent during it (its delta), which instance and which of its requests it was,
and the cold start's time when it started one. The server's own output is never put into any
result: it spans many callers' requests.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from cutor_spool.config import StageKind
from cutor_spool.deployments.bundle import unpack
from cutor_spool.deployments.errors import DeploymentError
from cutor_spool.deployments.manifest import ServerSpec
from cutor_spool.deployments.spec import Deployment
from cutor_spool.documents.deployment import InvocationRequest, Response
from cutor_spool.documents.states import Outcome, State
from cutor_spool.errors import SystemFailure
from cutor_spool.limits import Limits
from cutor_spool.runner.intake import Plan
from cutor_spool.runner.invocations import cgi
from cutor_spool.runner.invocations.context import Services
from cutor_spool.runner.invocations.run import RESPONSE, InvokeGrader, nix_source, opened_env
from cutor_spool.runner.invocations.warm_http import Exchange, ServerFailed, ServerTimedOut
from cutor_spool.runner.pipeline import Pipeline
from cutor_spool.runner.results import STAGE_OUTCOME, Reporter
from cutor_spool.runner.sandbox import Sandbox, StageProcess
from cutor_spool.runner.slots import Slot
from cutor_spool.runner.stage import StageOutput
from cutor_spool.runner.stagerunner import StageRunner
from cutor_spool.watcher.cancel import Cancelled

log = logging.getLogger(__name__)

SOCKET = "/work/.cutor.sock"  # $CUTOR_SOCKET inside the sandbox
SOCKET_NAME = ".cutor.sock"  # in the slot's work directory, as the host sees it
WARM_RESULT = "warm.json"
LIFETIME = 7 * 86400.0  # an instance's wall clock: it is stopped long before, when idle
_TICK = 0.05  # the housekeeping thread: deadlines of requests in flight, idle instances
_POLL = 0.005  # waiting for the socket


class StartFailed(Exception):
    """The cold start did not give a listening server; the reason is the caller's to read."""

    def __init__(self, reason: str, outcome: Outcome = Outcome.RUNTIME_ERROR) -> None:
        super().__init__(reason)
        self.outcome = outcome


@dataclass
class Instance:
    cid: str
    settings: ServerSpec
    limits: Limits  # the run stage's: a request's wall clock, its CPU, the answer's size
    slot: Slot
    sandbox: Sandbox
    ident: str = field(default_factory=lambda: secrets.token_hex(6))
    stage: StageProcess | None = None
    fd: int | None = None  # O_PATH of the socket: connected through /proc/self/fd/N
    requests: int = 0
    last_used: float = field(default_factory=time.monotonic)
    busy: threading.Lock = field(default_factory=threading.Lock)
    ended: threading.Event = field(default_factory=threading.Event)
    output: StageOutput | None = None
    stopped: str | None = None  # why, once stopped
    exchange: Exchange | None = None
    deadline: float = 0.0

    @property
    def address(self) -> str:
        return f"/proc/self/fd/{self.fd}"

    def cpu(self) -> float | None:
        cgroup = getattr(self.stage, "cgroup", None)  # bwrap's stage; Docker: see docs/deployments.md
        try:
            return float(cgroup.cpu_seconds()) if cgroup is not None else None
        except OSError:
            return None

    def how_it_ended(self) -> str:
        out = self.output
        if out is None:
            return "it did not end"
        how = f"exit code {out.exit_code}" if out.exit_code is not None else (out.message or "")
        return f"{out.status.value} ({how})"


class WarmPool:
    """The executor's warm instances, at most `capacity` (each holds a slot)."""

    def __init__(self, pipeline: Pipeline, *, capacity: int) -> None:
        self.pipeline = pipeline
        self.capacity = max(1, capacity)
        self._instances: dict[str, Instance] = {}
        self._starting: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._housekeeping, name="warm-pool", daemon=True)
        self._thread.start()

    # -- an invocation -----------------------------------------------------------------------
    def invoke(
        self,
        services: Services,
        request: InvocationRequest,
        deployment: Deployment,
        plan: Plan,
        grader: InvokeGrader,
        reporter: Reporter,
        cancel: Cancelled,
    ) -> None:
        settings = ServerSpec.model_validate(deployment.spec.manifest["server"])
        cold: float | None = None
        for _ in range(3):  # an instance stopped between being found and being used: the next one
            try:
                instance, started = self._instance(services, deployment, plan, grader, settings, reporter, cancel)
            except StartFailed as exc:
                self._answer(reporter, cgi.bad_gateway(f"the server did not start: {exc}"), exc.outcome, {})
                return
            cold = started if started is not None else cold
            with instance.busy:
                if instance.stopped is None and not instance.ended.is_set():
                    reporter.transition(State.RUNNING)
                    response, outcome, record = self._request(instance, request, grader.body)
                    self._answer(reporter, response, outcome, {**record, "cold_start": cold})
                    return
                self._stop(instance, instance.stopped or "it ended")
        raise SystemFailure(f"no warm instance of {deployment.cid} stayed up long enough to serve the request")

    def _answer(self, reporter: Reporter, response: Response, outcome: Outcome, record: dict[str, Any]) -> None:
        reporter.write(WARM_RESULT, record)
        reporter.write(RESPONSE, response.dump())
        reporter.finish(State.DONE, outcome, message=f"HTTP {response.status}")

    def _request(
        self, inst: Instance, request: InvocationRequest, body: bytes
    ) -> tuple[Response, Outcome, dict[str, Any]]:
        cpu_before, started = inst.cpu(), time.monotonic()
        exchange = Exchange(inst.address, timeout=inst.limits.wall_time)
        inst.exchange, inst.deadline = exchange, started + inst.limits.wall_time
        outcome, stop = Outcome.OK, None
        try:
            response = exchange.send(request, body, max_body=inst.limits.output)
        except ServerTimedOut:
            response = cgi.bad_gateway(f"the server did not answer within {inst.limits.wall_time:g} s", 504)
            outcome, stop = Outcome.TIME_LIMIT, "a request ran out of time"
        except ServerFailed as exc:
            inst.ended.wait(1.0)  # a crash: how it ended, if it did
            how = f"; the server ended: {inst.how_it_ended()}" if inst.output is not None else ""
            response = cgi.bad_gateway(f"{exc}{how}")
            ended = inst.output.status if inst.output is not None else None
            outcome = STAGE_OUTCOME.get(ended, Outcome.RUNTIME_ERROR) if ended is not None else Outcome.RUNTIME_ERROR
            outcome = Outcome.RUNTIME_ERROR if outcome == Outcome.OK else outcome
            stop = "it broke an exchange"
        finally:
            inst.exchange = None
        wall = time.monotonic() - started
        cpu_after = inst.cpu()
        cpu = cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
        inst.requests += 1
        inst.last_used = time.monotonic()
        if cpu is not None and cpu > inst.limits.cpu_time and stop is None:
            response = cgi.bad_gateway(f"the request used {cpu:.2f} s of CPU, above {inst.limits.cpu_time:g} s", 504)
            outcome, stop = Outcome.TIME_LIMIT, "a request used too much CPU"
        if stop is None and inst.requests >= inst.settings.max_requests:
            stop = f"max_requests ({inst.settings.max_requests})"
        if stop is not None:
            self._stop(inst, stop)
        record = {"instance": inst.ident, "request": inst.requests, "wall_time": round(wall, 6)}
        record["cpu_time"] = round(cpu, 6) if cpu is not None else None
        return response, outcome, record

    # -- instances ---------------------------------------------------------------------------
    def _instance(
        self,
        services: Services,
        deployment: Deployment,
        plan: Plan,
        grader: InvokeGrader,
        settings: ServerSpec,
        reporter: Reporter,
        cancel: Cancelled,
    ) -> tuple[Instance, float | None]:
        """The deployment's live instance, or a new one (and its cold start's seconds)."""
        cid = deployment.cid
        with self._lock:
            starting = self._starting.setdefault(cid, threading.Lock())
        with starting:  # one cold start per deployment at a time
            with self._lock:
                found = self._instances.get(cid)
            if found is not None and found.stopped is None and not found.ended.is_set():
                return found, None
            began = time.monotonic()
            self._make_room()
            inst = self._start(services, deployment, plan, grader, settings, reporter, cancel)
            with self._lock:
                self._instances[cid] = inst
            cold = time.monotonic() - began
            log.info("warm instance %s of %s started in %.3f s (uid %d)", inst.ident, cid, cold, inst.slot.uid)
            return inst, cold

    def _make_room(self) -> None:
        with self._lock:
            live = sorted(self._instances.values(), key=lambda i: i.last_used)
        for inst in live[: max(0, len(live) - self.capacity + 1)]:
            if inst.busy.acquire(blocking=False):
                try:
                    self._stop(inst, "its slot went to another deployment")
                finally:
                    inst.busy.release()
        with self._lock:
            if len(self._instances) >= self.capacity:
                raise SystemFailure(f"all {self.capacity} warm instance(s) of this executor are busy")

    def _start(
        self,
        services: Services,
        deployment: Deployment,
        plan: Plan,
        grader: InvokeGrader,
        settings: ServerSpec,
        reporter: Reporter,
        cancel: Cancelled,
    ) -> Instance:
        slot = self.pipeline.slots.acquire()
        sandbox = self.pipeline.backend.open(slot, f"warm-{deployment.cid[-12:]}")
        run = plan.limits[StageKind.RUN]
        inst = Instance(deployment.cid, settings, run, slot, sandbox)
        try:
            self._launch(inst, services, deployment, plan, grader, reporter, cancel)
            self._wait_listening(inst)
        except BaseException as exc:
            self._stop(inst, f"the cold start failed: {exc}")
            raise
        return inst

    def _launch(
        self,
        inst: Instance,
        services: Services,
        deployment: Deployment,
        plan: Plan,
        grader: InvokeGrader,
        reporter: Reporter,
        cancel: Cancelled,
    ) -> None:
        slot, config = inst.slot, services.config
        try:
            unpack(grader.work, slot.work, uid=slot.uid, gid=slot.gid, max_files=config.max_files,
                   max_bytes=config.sandbox.work_size)  # fmt: skip
        except DeploymentError as exc:  # the spool's own zip, checked against its CID
            raise SystemFailure(f"the compiled work area cannot be unpacked: {exc}") from exc
        runner = StageRunner(plan, inst.sandbox, reporter, cancel)
        environments = self.pipeline.environments
        if plan.submission.dependencies and environments is not None:
            reporter.transition(State.INSTALLING_DEPENDENCIES)
            prepared = environments.prepare(plan, nix_source(services, deployment, plan.submission), cancel.event)
            reporter.dependencies(prepared.record)
            if not prepared.ok:
                raise StartFailed(f"its dependencies: {prepared.message}", Outcome.DEPENDENCY_FAILURE)
            runner.env = prepared.environment
        assert plan.run is not None
        command, files = runner.script_command(plan.run)
        limits = replace(inst.limits, wall_time=LIFETIME,
                         cpu_time=min(inst.limits.cpu_time * inst.settings.max_requests, LIFETIME))  # fmt: skip
        env = {**opened_env(services, deployment), "CUTOR_SOCKET": SOCKET}
        spec = runner.spec("server", command, limits, files=files, env=env)
        # stdout=None: captured and capped like a run stage's output (bwrap; see docs for Docker)
        inst.stage = inst.sandbox.spawn(spec, None, stdout=None)  # type: ignore[arg-type]
        stage = inst.stage

        def waiter() -> None:
            try:
                inst.output = stage.wait()
            finally:
                inst.ended.set()

        threading.Thread(target=waiter, name=f"warm-{inst.ident}", daemon=True).start()

    def _wait_listening(self, inst: Instance) -> None:
        deadline = time.monotonic() + inst.settings.ready_timeout
        while time.monotonic() < deadline:
            if inst.ended.is_set():
                raise StartFailed(f"it ended before listening on $CUTOR_SOCKET: {inst.how_it_ended()}")
            if inst.fd is None:
                inst.fd = _open_socket(inst.slot)
            if inst.fd is not None and _accepts(inst.address):
                return
            time.sleep(_POLL)
        raise StartFailed(f"it did not listen on $CUTOR_SOCKET ({SOCKET}) within {inst.settings.ready_timeout:g} s")

    def _stop(self, inst: Instance, why: str) -> None:
        """Kills the instance's whole cgroup and releases its slot (once); the caller holds
        `busy`, or nobody can."""
        with self._lock:
            if self._instances.get(inst.cid) is inst:
                del self._instances[inst.cid]
            if inst.stopped is not None:
                return
            inst.stopped = why
        if inst.stage is not None:
            inst.stage.kill()
            if not inst.ended.wait(15.0):
                log.error("warm instance %s of %s did not end in 15 s", inst.ident, inst.cid)
        if inst.fd is not None:
            os.close(inst.fd)
            inst.fd = None
        try:
            inst.sandbox.close()
        finally:
            self.pipeline.slots.release(inst.slot)
        log.info("warm instance %s of %s stopped after %d request(s): %s; %s", inst.ident, inst.cid,
                 inst.requests, why, inst.how_it_ended())  # fmt: skip

    # -- housekeeping ------------------------------------------------------------------------
    def _housekeeping(self) -> None:
        while not self._closing.wait(_TICK):
            with self._lock:
                instances = list(self._instances.values())
            now = time.monotonic()
            for inst in instances:
                exchange = inst.exchange
                if exchange is not None and now > inst.deadline:
                    exchange.abort()
                with _try_lock(inst.busy) as free:
                    if not free:
                        continue
                    if inst.ended.is_set():
                        self._stop(inst, "it ended by itself")
                    elif now - inst.last_used > inst.settings.idle_timeout:
                        self._stop(inst, f"idle for {inst.settings.idle_timeout:g} s")

    def close(self) -> None:
        """Stops every instance (the executor is stopping; no request is in flight)."""
        self._closing.set()
        self._thread.join()
        with self._lock:
            instances = list(self._instances.values())
        for inst in instances:
            self._stop(inst, "the executor is stopping")


@contextmanager
def _try_lock(lock: threading.Lock) -> Iterator[bool]:
    got = lock.acquire(blocking=False)
    try:
        yield got
    finally:
        if got:
            lock.release()


def _open_socket(slot: Slot) -> int | None:
    """An O_PATH descriptor of the server's socket, the last name not followed (the server owns
    /work); None until it is a socket of the slot's uid."""
    try:
        fd = os.open(slot.work / SOCKET_NAME, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    info = os.fstat(fd)
    if stat.S_ISSOCK(info.st_mode) and info.st_uid == slot.uid:
        return fd
    os.close(fd)
    return None


def _accepts(address: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(address)
        except OSError:
            return False
    return True
