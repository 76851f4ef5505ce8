"""One bubblewrap stage's process and its supervision (bwrap.py opens the sandbox and starts it
here): the launcher's command line for a warm slot (keeper.py) or a fresh bwrap (bwrap_layout.py),
its pipes, and the runner's one supervisor (supervise.py), in the caller's thread or its own."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cutor_spool.runner.bwrap_layout import (
    bwrap_argv,
    env_args,
    stage_launch_argv,
)
from cutor_spool.runner.bwrap_pipes import StagePipes
from cutor_spool.runner.capture import Capture
from cutor_spool.runner.cgroups import Cgroup
from cutor_spool.runner.keeper import TreeKey, tree_args, warm_argv
from cutor_spool.runner.launcher import ExitReport
from cutor_spool.runner.stage import STARTED_MARKER, STOPPED_BY_US, StageOutput, StageSpec, conclude, internal_error
from cutor_spool.runner.supervise import LimitWatch, PipeSource, ProcessChild, Source, Supervisor

if TYPE_CHECKING:
    from cutor_spool.runner.bwrap import BwrapSandbox

log = logging.getLogger(__name__)

NAME = "bubblewrap"
HOST_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


@dataclass
class BwrapStage:
    """One stage's process and its supervision: `run` supervises it in the caller's thread,
    `spawn` in a thread of its own (see `Sandbox.spawn`)."""

    sandbox: BwrapSandbox
    spec: StageSpec
    cgroup: Cgroup
    proc: subprocess.Popen[bytes]
    supervisor: Supervisor
    watch: LimitWatch
    started: float
    stdin: int | None = None
    stdout: int | None = None
    report: ExitReport | None = None
    tree: TreeKey | None = None  # the warm slot's tree it entered, if it did
    _thread: threading.Thread | None = None
    _output: StageOutput | None = None
    _error: BaseException | None = None

    @classmethod
    def start(
        cls,
        sandbox: BwrapSandbox,
        spec: StageSpec,
        cgroup: Cgroup,
        cancel: threading.Event | None,
        *,
        stdin: int | None,
        stdout: int | None,
    ) -> BwrapStage:
        slot, backend = sandbox.slot, sandbox.backend
        pipes = StagePipes()
        seccomp_fd = None if backend.seccomp is None else os.open(backend.seccomp, os.O_RDONLY)
        report = ExitReport.open(slot.io) if backend.layout.launcher is not None else None
        marker, tree, ns_fd, net_fd = "stdout" if stdout is None else "stderr", None, None, None
        try:
            pipes.wire(spec.stdin, stdin=stdin, stdout=stdout)
            pipes.env(env_args({**spec.env, **(report.env() if report is not None else {})}))
            fds = {"status": pipes.child["status"], "env": pipes.child["env"]}
            fds |= {} if seccomp_fd is None else {"seccomp": seccomp_fd}
            if backend.trees is not None and backend.launcher is not None:  # a warm slot (keeper.py)
                args = tree_args(backend.layout, network=spec.network, ro_binds=spec.ro_binds)
                ns_fd = backend.trees.take(args)  # None: bwrap says why it cannot be made
            if ns_fd is not None and backend.launcher is not None:
                fds, tree = {"ns": ns_fd, **fds}, tuple(args)
                if not spec.network and backend.netns is not None and (net_fd := backend.netns.take()) is not None:
                    fds["netns"] = net_fd
                argv = warm_argv(
                    backend.launcher, procs_files=cgroup.procs_files, limits=spec.limits, uid=slot.uid, gid=slot.gid,
                    fds=fds, work=slot.root / spec.workdir, io=slot.io, tmp_size=backend.layout.tmp_size,
                    network=spec.network, keyring=backend.keyring, marker=marker, command=spec.sandbox_command(),
                )  # fmt: skip
            else:
                launch = stage_launch_argv(cgroup.procs_files, spec.limits, slot.uid, slot.gid, backend.launcher)
                argv = launch + bwrap_argv(
                    backend.layout, slot_root=slot.root, workdir=spec.workdir, network=spec.network,
                    ro_binds=spec.ro_binds, env=spec.env, status_fd=pipes.child["status"],
                    command=spec.sandbox_command(), seccomp_fd=seccomp_fd, marker=marker,
                    report_token=report.token if report else "", env_fd=pipes.child["env"],
                )  # fmt: skip
            started = time.monotonic()
            proc = subprocess.Popen(
                argv, stdin=pipes.child["stdin"], stdout=pipes.child["stdout"], stderr=pipes.child["stderr"],
                pass_fds=tuple(fds.values()), start_new_session=True, env=HOST_ENV,
            )  # fmt: skip
        except BaseException:
            pipes.abandon()
            if report is not None:
                report.close()
            raise
        finally:
            for fd in (seccomp_fd, ns_fd, net_fd):
                if fd is not None:
                    os.close(fd)
        pipes.started()
        stage = cls._supervised(sandbox, spec, cgroup, cancel, proc, pipes, started, captured=stdout is None)
        stage.report, stage.tree = report, tree
        return stage

    @classmethod
    def _supervised(
        cls,
        sandbox: BwrapSandbox,
        spec: StageSpec,
        cgroup: Cgroup,
        cancel: threading.Event | None,
        proc: subprocess.Popen[bytes],
        pipes: StagePipes,
        started: float,
        *,
        captured: bool,
    ) -> BwrapStage:
        capture = Capture(
            spec.limits.output,
            started_marker=STARTED_MARKER,
            marker_stream="stdout" if captured else "stderr",
            live=spec.live,
        )
        sources: list[Source] = [
            PipeSource(pipes.ours.pop("status"), "status"),
            PipeSource(pipes.ours.pop("stderr"), "stderr"),
        ]
        if captured:
            sources.append(PipeSource(pipes.ours.pop("stdout"), "stdout"))

        def monitor() -> int | None:  # spared while it takes the sandbox down (see Cgroup.kill)
            return proc.pid if b"child-pid" in capture.side.get("status", b"") else None

        watch = LimitWatch.stage(spec.limits, cgroup, cancel, started)
        child = ProcessChild(proc, cgroup, spare=monitor)
        supervisor = Supervisor(child, sources, capture, watch, label=sandbox.label)
        return cls(
            sandbox, spec, cgroup, proc, supervisor, watch, started, pipes.ours.get("stdin"), pipes.ours.get("stdout")
        )

    def supervise(self) -> StageOutput:
        try:
            self.supervisor.run()
            return self._conclude(time.monotonic() - self.started)
        except OSError as exc:
            log.exception("%s: stage %s failed to run", self.sandbox.label, self.spec.name)
            return internal_error(self.spec, f"sandbox failure: {exc}", NAME)
        finally:
            self.cgroup.remove()
            if self.report is not None:
                self.report.close()
                self.report = None

    def _conclude(self, wall: float) -> StageOutput:
        cgroup, capture = self.cgroup, self.supervisor.capture
        cgroup.kill()  # nothing should be left; if something is, it goes now
        cpu, peak, ooms = cgroup.cpu_seconds(), cgroup.memory_peak(), cgroup.oom_kills()
        # Without the marker the sandbox never reached the job, unless we stopped it first (see
        # STOPPED_BY_US).
        killed_for = self.supervisor.reason
        started_ok = b"child-pid" in capture.side.get("status", b"") and (
            capture.started or killed_for in STOPPED_BY_US
        )
        output = conclude(
            self.spec.name, self.spec.limits, NAME, capture=capture, started=started_ok, killed_for=killed_for,
            returncode=self.proc.returncode, oom_kills=ooms, cpu_time=cpu, wall_time=wall, memory=peak,
            setup_error=capture.stderr.decode("utf-8", "replace"),
            wait_status=self.report.status() if self.report is not None else None,
        )  # fmt: skip
        if not started_ok:
            log.error("%s: %s", self.sandbox.label, output.message)
            if self.tree is not None and self.sandbox.backend.trees is not None and killed_for not in STOPPED_BY_US:
                self.sandbox.backend.trees.drop(self.tree)
        return output

    def supervise_in_background(self) -> None:
        def target() -> None:
            try:
                self._output = self.supervise()
            except BaseException as exc:  # handed to whoever waits
                self._error = exc

        self._thread = threading.Thread(target=target, name=f"stage-{self.spec.name}", daemon=True)
        self._thread.start()

    def wait(self) -> StageOutput:
        if self._thread is None:
            return self.supervise()
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._output is not None
        return self._output

    def kill(self) -> None:
        self.watch.killed.set()

    def cpu_seconds(self) -> float | None:
        if self._output is not None or self._error is not None:
            return None
        try:
            return self.cgroup.cpu_seconds()
        except (OSError, ValueError):  # removed as the stage ended
            return None
