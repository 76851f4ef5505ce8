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
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from cutor_spool.config import StageKind
from cutor_spool.deployments.manifest import ServerSpec
from cutor_spool.deployments.spec import Deployment
from cutor_spool.documents.deployment import InvocationRequest, Response
from cutor_spool.documents.states import Outcome, State
from cutor_spool.errors import SystemFailure
from cutor_spool.runner.intake import Plan
from cutor_spool.runner.invocations import cgi
from cutor_spool.runner.invocations.context import Services
from cutor_spool.runner.invocations.run import RESPONSE, InvokeGrader
from cutor_spool.runner.invocations.warm_http import Exchange, ServerFailed, ServerTimedOut
from cutor_spool.runner.invocations.warm_instance import Instance, StartFailed
from cutor_spool.runner.pipeline import Pipeline
from cutor_spool.runner.results import STAGE_OUTCOME, Reporter
from cutor_spool.watcher.cancel import Cancelled

log = logging.getLogger(__name__)

WARM_RESULT = "warm.json"
T = TypeVar("T")
_TICK = 0.05  # the housekeeping thread: deadlines of requests in flight, idle instances


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
                    reporter.slot_taken(instance.slot.uid, instance.slot.cpu)
                    reporter.transition(State.RUNNING)
                    response, outcome, record = self._request(instance, request, grader.body)
                    grader.wall = record["wall_time"]  # what the request is charged for (payment.py)
                    self._answer(reporter, response, outcome, {**record, "cold_start": cold})
                    return
                self._stop(instance, instance.stopped or "it ended")
        raise SystemFailure(f"no warm instance of {deployment.cid} stayed up long enough to serve the request")

    def exchange_live(
        self, cid: str, request: InvocationRequest, body: bytes, pay: Callable[[Instance], T], *, wait: float
    ) -> tuple[Response, dict[str, Any], T] | None:
        """The direct path (direct.py): one exchange with the deployment's live instance, `pay`
        called once the instance is this request's (it raises to refuse it, before the exchange).
        None when there is no live instance or it stayed busy for `wait` seconds: the caller
        falls back to the spool, which starts one."""
        with self._lock:
            inst = self._instances.get(cid)
        if inst is None or not inst.busy.acquire(timeout=wait):
            return None
        try:
            if inst.stopped is not None or inst.ended.is_set():
                return None
            paid = pay(inst)
            response, _outcome, record = self._request(inst, request, body)
            return response, record, paid
        finally:
            inst.busy.release()

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
        if self.pipeline.backend.name != "bubblewrap":  # see docs/deployments.md, "Warm servers"
            raise SystemFailure(f"warm servers run on bubblewrap executors only, not {self.pipeline.backend.name}")
        slot = self.pipeline.slots.acquire()
        sandbox = self.pipeline.backend.open(slot, f"warm-{deployment.cid[-12:]}")
        run = plan.limits[StageKind.RUN]
        inst = Instance(deployment.cid, settings, run, slot, sandbox)
        try:
            inst.launch(self.pipeline, services, deployment, plan, grader, reporter, cancel)
            inst.wait_listening()
        except BaseException as exc:
            self._stop(inst, f"the cold start failed: {exc}")
            raise
        return inst

    def _stop(self, inst: Instance, why: str) -> None:
        """Kills the instance's whole cgroup and releases its slot (once); the caller holds
        `busy`, or nobody can."""
        with self._lock:
            if self._instances.get(inst.cid) is inst:
                del self._instances[inst.cid]
            if inst.stopped is not None:
                return
            inst.stopped = why
        try:
            inst.terminate()
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
