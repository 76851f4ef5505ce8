"""A warm server's instance (warm.py): its cold start in a slot of its own, waiting for it to
listen, and what the pool reads of it (its cgroup's CPU, how it ended).

The socket: `$CUTOR_SOCKET` is `/work/.cutor.sock`, in the server's own work directory (the only
place of the sandbox it may write that the executor also sees, as the slot's `work`). The
server owns that directory, so the executor (root) never follows a name there: it opens the
socket once with O_PATH | O_NOFOLLOW, checks that it is a socket owned by the slot's uid, and
connects through `/proc/self/fd/N` (warm_http.py); a symlink to a host socket, or anything else
the server puts there, is never reached.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import stat
import threading
import time
from dataclasses import dataclass, field, replace

from cutor_spool.deployments.bundle import unpack
from cutor_spool.deployments.errors import DeploymentError
from cutor_spool.deployments.manifest import ServerSpec
from cutor_spool.deployments.spec import Deployment
from cutor_spool.documents.states import Outcome, State
from cutor_spool.errors import SystemFailure
from cutor_spool.limits import Limits
from cutor_spool.runner.intake import Plan
from cutor_spool.runner.invocations.context import Services
from cutor_spool.runner.invocations.run import InvokeGrader, nix_source, opened_env
from cutor_spool.runner.invocations.warm_http import Exchange
from cutor_spool.runner.pipeline import Pipeline
from cutor_spool.runner.results import Reporter
from cutor_spool.runner.sandbox import Sandbox, StageProcess
from cutor_spool.runner.slots import Slot
from cutor_spool.runner.stage import StageOutput
from cutor_spool.runner.stagerunner import StageRunner
from cutor_spool.watcher.cancel import Cancelled

log = logging.getLogger(__name__)

SOCKET = "/work/.cutor.sock"  # $CUTOR_SOCKET inside the sandbox
SOCKET_NAME = ".cutor.sock"  # in the slot's work directory, as the host sees it
LIFETIME = 7 * 86400.0  # an instance's wall clock: it is stopped long before, when idle
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

    def terminate(self) -> None:
        """Kills its whole cgroup, waits for the stage's end, closes the socket's descriptor."""
        if self.stage is not None:
            self.stage.kill()
            if not self.ended.wait(15.0):
                log.error("warm instance %s of %s did not end in 15 s", self.ident, self.cid)
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def how_it_ended(self) -> str:
        out = self.output
        if out is None:
            return "it did not end"
        how = f"exit code {out.exit_code}" if out.exit_code is not None else (out.message or "")
        return f"{out.status.value} ({how})"

    def launch(
        self,
        pipeline: Pipeline,
        services: Services,
        deployment: Deployment,
        plan: Plan,
        grader: InvokeGrader,
        reporter: Reporter,
        cancel: Cancelled,
    ) -> None:
        slot, config = self.slot, services.config
        try:
            unpack(grader.work, slot.work, uid=slot.uid, gid=slot.gid, max_files=config.max_files,
                   max_bytes=config.sandbox.work_size)  # fmt: skip
        except DeploymentError as exc:  # the spool's own zip, checked against its CID
            raise SystemFailure(f"the compiled work area cannot be unpacked: {exc}") from exc
        runner = StageRunner(plan, self.sandbox, reporter, cancel)
        environments = pipeline.environments
        if plan.submission.dependencies and environments is not None:
            reporter.transition(State.INSTALLING_DEPENDENCIES)
            prepared = environments.prepare(plan, nix_source(services, deployment, plan.submission), cancel.event)
            reporter.dependencies(prepared.record)
            if not prepared.ok:
                raise StartFailed(f"its dependencies: {prepared.message}", Outcome.DEPENDENCY_FAILURE)
            runner.env = prepared.environment
            reporter.transition(State.DEPENDENCIES_INSTALLED)
        assert plan.run is not None
        command, files = runner.script_command(plan.run)
        limits = replace(self.limits, wall_time=LIFETIME,
                         cpu_time=min(self.limits.cpu_time * self.settings.max_requests, LIFETIME))  # fmt: skip
        env = {**opened_env(services, deployment), "CUTOR_SOCKET": SOCKET}
        spec = runner.spec("server", command, limits, files=files, env=env)
        # stdout=None: captured and capped like a run stage's output (bwrap; see docs for Docker)
        self.stage = self.sandbox.spawn(spec, None, stdout=None)
        stage = self.stage

        def waiter() -> None:
            try:
                self.output = stage.wait()
            finally:
                self.ended.set()

        threading.Thread(target=waiter, name=f"warm-{self.ident}", daemon=True).start()

    def wait_listening(self) -> None:
        deadline = time.monotonic() + self.settings.ready_timeout
        while time.monotonic() < deadline:
            if self.ended.is_set():
                raise StartFailed(f"it ended before listening on $CUTOR_SOCKET: {self.how_it_ended()}")
            if self.fd is None:
                self.fd = open_socket(self.slot)
            if self.fd is not None and accepts(self.address):
                return
            time.sleep(_POLL)
        raise StartFailed(f"it did not listen on $CUTOR_SOCKET ({SOCKET}) within {self.settings.ready_timeout:g} s")


def open_socket(slot: Slot) -> int | None:
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


def accepts(address: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(address)
        except OSError:
            return False
    return True
