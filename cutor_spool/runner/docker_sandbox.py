"""One submission's sandbox on the Docker backend: its containers, and its stages as execs.

`DockerBackend.open` (docker.py) makes one per slot and submission. Its containers are created
lazily, one per (workdir, network, Nix store paths) (`ContainerKey`, made by docker_layout.py's
`host_config`), started again when a stage killed their keeper, and removed, retried, when the
sandbox closes; a stage is an exec through the launcher, watched by the supervisor's `LimitWatch`
over the container's cgroup (docker_cgroup.py) and the attach stream (docker_exec.py,
docker_stream.py). docker.py's docstring says what a container is and why.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import docker
import docker.errors

from cutor_spool.errors import SandboxError
from cutor_spool.runner.bwrap_layout import BASE_ENV
from cutor_spool.runner.capture import Capture
from cutor_spool.runner.docker_cgroup import ContainerCgroup, cgroup_of, container_init, container_keeper
from cutor_spool.runner.docker_exec import watch_exec
from cutor_spool.runner.docker_layout import OVERHEAD_PROCESSES, ContainerKey, alive_file, host_config, lock_alive
from cutor_spool.runner.docker_stream import start_exec
from cutor_spool.runner.launcher import ALIVE_POINT, MOUNT_POINT, STDIN_NAME, ExitReport, exec_argv
from cutor_spool.runner.sandbox import PIPE, StageProcess
from cutor_spool.runner.slots import Slot
from cutor_spool.runner.stage import STARTED_MARKER, STOPPED_BY_US, StageOutput, StageSpec, conclude, internal_error
from cutor_spool.runner.supervise import LimitWatch

if TYPE_CHECKING:
    from cutor_spool.runner.docker import DockerBackend

log = logging.getLogger(__name__)

NAME = "docker"
LABEL = "cutor-spool"
API_TIMEOUT = 60.0
REMOVE_ATTEMPTS = 3
# What a sandbox stage may fail with that is the system's fault, not the submission's.
FAILURES = (docker.errors.DockerException, OSError, SandboxError)


@dataclass
class Container:
    id: str
    cgroup: ContainerCgroup


@dataclass(eq=False)
class DockerSandbox:
    backend: DockerBackend
    slot: Slot
    label: str
    stages: int = 0
    containers: dict[ContainerKey, Container] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.api = self.backend.client()
        self._alive: int | None = None

    def hold(self) -> None:
        """Takes the slot's alive lock, on which the containers' keepers wait (see
        `launcher`): while this process lives, they keep their containers up."""
        self._alive = lock_alive(alive_file(self.backend.layout, self.slot), self.slot.uid)

    @property
    def workdir(self) -> Path:
        return self.slot.work

    # -- containers --------------------------------------------------------------------------
    def _container(self, key: ContainerKey) -> Container:
        box = self.containers.get(key)
        if box is not None:
            if box.cgroup.intact():
                return box
            log.warning("%s: container %s died (its keeper was killed); starting another", self.label, box.id[:12])
            del self.containers[key]
            self.remove(box.id)
        for path in key.ro_binds:
            if not Path(path).exists():
                raise SandboxError(f"{path} (a store path of the environment) does not exist on this host")
        layout, slot = self.backend.layout, self.slot
        name = f"cutor-{slot.uid}-{key.workdir}-{secrets.token_hex(4)}"
        created = self.api.create_container(
            layout.image,
            command=[MOUNT_POINT, "keep", ALIVE_POINT],
            user=f"{slot.uid}:{slot.gid}",
            working_dir="/work",
            hostname="sandbox",
            environment=dict(BASE_ENV),
            labels={**self.backend.labels(slot), f"{LABEL}.submission": self.label[:200]},
            name=name,
            host_config=self.api.create_host_config(**host_config(layout, slot, key)),
        )
        container_id = str(created["Id"])
        try:
            self.api.start(container_id)
            init_pid = int(self.api.inspect_container(container_id)["State"]["Pid"])
            cgroup = cgroup_of(init_pid, container_id[:12])
            spares = (container_init(init_pid), container_keeper(cgroup, init_pid))
        except BaseException:
            self.remove(container_id)
            raise
        for spare in spares:  # the OOM killer must take the stage's processes, never these two
            try:
                with open(f"/proc/{spare.pid}/oom_score_adj", "w", encoding="ascii") as fh:
                    fh.write("-1000")
            except OSError:
                pass
        box = Container(container_id, ContainerCgroup(cgroup, spares))
        self.containers[key] = box
        log.info("%s: container %s (%s) started", self.label, container_id[:12], key.workdir)
        return box

    def remove(self, container_id: str) -> None:
        """Removes a container (killing what runs in it), retried with a long timeout: the
        engine has been seen to time out after a flood. A failure is logged, not raised: the
        container's keeper ends it once the sandbox lets go of its lock, and what is left of it
        is removed when the slot is next opened or swept."""
        api = self.backend.client(self.backend.config.docker.remove_timeout)
        try:
            for attempt in range(1, REMOVE_ATTEMPTS + 1):
                try:
                    api.remove_container(container_id, force=True)
                    return
                except docker.errors.NotFound:
                    return
                except FAILURES as exc:
                    log.warning(
                        "%s: removing container %s, attempt %d: %s", self.label, container_id[:12], attempt, exc
                    )
                    time.sleep(0.5 * attempt)
            log.error("%s: container %s could not be removed; it will be swept", self.label, container_id[:12])
            self.slot.suspect = True  # its next holder scans for the uid's processes
        finally:
            api.close()

    def close(self) -> None:
        try:
            for box in self.containers.values():
                self.remove(box.id)
            self.containers.clear()
        finally:
            self.api.close()
            if self._alive is not None:
                os.close(self._alive)  # after the containers: their keepers must not see it go first
                self._alive = None
            self.backend.forget(self)

    # -- stages ------------------------------------------------------------------------------
    def spawn(
        self,
        spec: StageSpec,
        cancel: threading.Event | None = None,
        *,
        stdin: int | None = None,
        stdout: int | None = PIPE,
    ) -> StageProcess:
        """Not with Docker: an exec's stdin and stdout are the engine's one attach stream, not
        file descriptors that another stage could be given. Interactive problems need bubblewrap."""
        raise NotImplementedError("the Docker backend cannot spawn stages wired to other processes; use bubblewrap")

    def run(self, spec: StageSpec, cancel: threading.Event | None = None) -> StageOutput:
        self.stages += 1
        slot = self.slot
        slot.reset_io()
        for name, data in spec.files.items():
            (slot.io / name).write_bytes(data)
        (slot.io / STDIN_NAME).write_bytes(spec.stdin)
        report = ExitReport.open(slot.io)
        try:
            box = self._container(ContainerKey(spec.workdir, spec.network, tuple(spec.ro_binds)))
            return self._run(box, spec, cancel, report)
        except FAILURES as exc:
            log.exception("%s: stage %s failed to run", self.label, spec.name)
            return internal_error(spec, f"sandbox failure: {exc}", NAME)
        finally:
            report.close()

    def _run(self, box: Container, spec: StageSpec, cancel: threading.Event | None, report: ExitReport) -> StageOutput:
        slot, limits = self.slot, spec.limits
        start = box.cgroup.start_stage(memory=limits.memory, pids=limits.processes + OVERHEAD_PROCESSES)
        nproc = limits.processes + OVERHEAD_PROCESSES * len(self.containers)
        exec_id = str(
            self.api.exec_create(
                box.id,
                exec_argv(limits, nproc, spec.sandbox_command()),
                user=f"{slot.uid}:{slot.gid}",
                environment={**BASE_ENV, **spec.env, **report.env()},
                workdir="/work",
            )["Id"]
        )
        started = time.monotonic()
        sock, early = start_exec(self.backend.socket, self.backend.api_version, exec_id, API_TIMEOUT)
        watch = LimitWatch.stage(limits, box.cgroup.cgroup, cancel, started, cpu_offset=start.cpu)
        capture = Capture(limits.output, started_marker=STARTED_MARKER, live=spec.live)
        try:
            child, limit_watch, killed_for = watch_exec(
                self.api, exec_id, box.cgroup, watch, capture, sock, early, started=started, label=self.label
            )
        finally:
            sock.close()
        returncode = child.exit_code()
        wall = (child.ended or time.monotonic()) - started
        lost = child.container_lost or not box.cgroup.intact()
        if lost:
            cpu, peak, ooms = limit_watch.cpu_seen, 0, 0
        else:
            cg = box.cgroup.cgroup
            cpu, ooms = cg.cpu_seconds() - start.cpu, cg.oom_kills() - start.oom_kills
            peak = max(0, box.cgroup.peak() - start.usage)
        # The launcher writes the started marker just before exec'ing the job: without it the
        # stage never reached the job, unless we stopped it first for a limit.
        engine = capture.side.get("engine", b"")
        started_ok = not engine and (capture.started or killed_for in STOPPED_BY_US)
        output = conclude(
            spec.name, limits, NAME, capture=capture, started=started_ok, killed_for=killed_for,
            returncode=returncode, oom_kills=ooms, cpu_time=cpu, wall_time=wall, memory=peak,
            setup_error=(engine or capture.stderr).decode("utf-8", "replace"),
            note="the stage killed its container's keeper; the container ended with it" if lost else None,
            wait_status=report.status(),
        )  # fmt: skip
        if not started_ok:
            log.error("%s: %s", self.label, output.message)
        return output
