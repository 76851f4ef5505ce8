"""The Docker backend: one long-lived container per submission, an exec per stage.

Stages mean the same as with bubblewrap (`runner/bwrap.py`): the same statuses from
`stage.classify`, the same supervisor (`supervise.py`) for wall time, CPU of all processes and
cancellation, the same byte cap on output, stdin and the stage's files in the slot's `io`
directory (read-only at /run/cutor), /work the slot's writable directory, Nix store paths
read-only at their own paths.

The container (created lazily, at a submission's first stage that needs it):

- `init=True` (docker-init, i.e. tini, is pid 1: pid 1 ignores default-action signals such as
  SIGXCPU, and orphans need a reaper) whose only child is the *keeper*, `cutor-launch keep`,
  which ends the container when the worker dies (bubblewrap's --die-with-parent);
- the slot's uid and gid (never root), all capabilities dropped, no-new-privileges, read-only
  root, a size-capped tmpfs /tmp and /dev/shm, no network (`network_mode="none"`) unless the
  stage may use it, logging off (json-file cannot keep up with a flood: output comes through the
  exec's attach stream, cut at the stage's cap), pids and memory (+ swap) limits that each stage
  then narrows through the container's host cgroup (`docker_cgroup.py`); with CPU pinning, the
  slot's CPU as the container's cpuset (`cpuset_cpus`);
- the host's prepared /etc/passwd and /etc/group (the slot users, as with bubblewrap), and for
  stages without network an /etc/hosts and an empty /etc/resolv.conf;
- the static `cutor-launch` (`launcher.py`), through which every exec sets its rlimits and
  stdin, and which stays as the job's parent to report its wait status (`launcher.ExitReport`:
  the exec's exit code alone cannot tell `exit 139` from a SIGSEGV);
- every file bound from the host (the launcher, /etc files, the alive lock) comes from a tmpfs on
  `<state-dir>/docker`, and /work and /run/cutor are the slot's tmpfs mounts, so that the
  container's /proc/self/mountinfo names no path of the state directory (what Docker itself
  shows stays: its overlay2 directories under /var/lib/docker and the container's id).

A checker (`workdir="aux"`) never shares a container with the submission's own stages: it would
run among processes and files the submission could have planted. Containers are keyed by
(workdir, network, Nix store paths), since mounts cannot change once a container exists; within
one submission that is one container for its stages and one for a checker. Between stages every
process but docker-init and the keeper is killed, so nothing of one stage runs on in the next;
files in /work and /tmp stay (like /work with bubblewrap). A stage that kills the keeper (`kill -9
-1` reaches it: it runs as the same uid) takes the container down with it; the next stage gets a
new one. All of a submission's containers are removed when its sandbox closes (the engine has
been seen to time out removing a container after a flood: removal is retried, with a long timeout);
containers left by a dead worker are removed by `sweep` and when their slot is next opened.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import docker
import docker.errors

from cutor_spool.config import SpoolConfig
from cutor_spool.errors import SandboxError
from cutor_spool.runner.docker_layout import OVERHEAD_PROCESSES, Layout, engine_socket, write_etc
from cutor_spool.runner.docker_sandbox import API_TIMEOUT, FAILURES, LABEL, NAME, DockerSandbox
from cutor_spool.runner.launcher import build_launcher, launcher_dir, publish
from cutor_spool.runner.seccomp import docker_security_opt, policy
from cutor_spool.runner.slots import Slot, SlotPool, tmpfs_once

log = logging.getLogger(__name__)

OWN_SIZE = 16 << 20  # the tmpfs of the files containers bind: the launcher (~800 KiB), /etc files, alive locks


class DockerBackend:
    name = NAME

    def __init__(self, config: SpoolConfig, state_dir: Path) -> None:
        self.config = config
        self.state_dir = state_dir
        self.socket = engine_socket(config.docker.url)
        try:
            probe = docker.APIClient(base_url=f"unix://{self.socket}", version="auto", timeout=API_TIMEOUT)
        except FAILURES as exc:
            raise SandboxError(f"cannot reach the Docker engine at {self.socket} (is dockerd running?): {exc}") from exc
        self.api_version: str = probe.api_version
        try:
            probe.inspect_image(config.docker.image)
        except docker.errors.ImageNotFound as exc:
            image = config.docker.image
            raise SandboxError(
                f"the Docker image {image} (spool.yaml docker.image) is not on this host: load it"
            ) from exc
        except FAILURES as exc:
            raise SandboxError(f"the Docker engine at {self.socket} failed: {exc}") from exc
        finally:
            probe.close()
        own = state_dir / "docker"
        box, maximum = config.sandbox, config.limits.resolved_maximum()
        tmpfs_once(own, OWN_SIZE)  # what containers bind from it then names no host path in their mountinfo
        write_etc(own / "etc", uid_base=box.uid_base, slots=box.slots)
        for path in box.ro_binds:
            if not Path(path).exists():
                raise SandboxError(f"sandbox.ro_binds: {path} does not exist on this host")
        self.layout = Layout(
            image=config.docker.image,
            launcher=publish(build_launcher(launcher_dir(state_dir)), own),
            etc=own / "etc",
            alive=own / "alive",
            tmp_size=box.tmp_size,
            network=config.docker.network,
            extra_ro=tuple(box.ro_binds),
            bind_host_usr=config.docker.bind_host_usr,
            maximum_memory=maximum.memory,
            maximum_processes=maximum.processes,
            ulimits=(
                ("nofile", maximum.open_files),
                ("fsize", maximum.file_size),
                ("stack", maximum.stack),
                ("core", 0),
                # per uid, across all of the slot's containers (each adds its init and keeper)
                ("nproc", maximum.processes + 8 * OVERHEAD_PROCESSES),
            ),
            seccomp=(docker_security_opt(policy(box.seccomp)),) if box.seccomp.enabled else (),
        )
        self._lock = threading.Lock()
        self._open: set[DockerSandbox] = set()

    def client(self, timeout: float = API_TIMEOUT) -> docker.APIClient:
        api = docker.APIClient(base_url=f"unix://{self.socket}", version=self.api_version, timeout=timeout)
        api.trust_env = False  # a local socket: no proxy settings to look up on every request
        return api

    def labels(self, slot: Slot | None = None) -> dict[str, str]:
        labels = {f"{LABEL}.state-dir": str(self.state_dir)}
        if slot is not None:
            labels[f"{LABEL}.slot"] = str(slot.uid)
        return labels

    def leftovers(self, api: docker.APIClient, uid: int | None = None) -> list[dict[str, Any]]:
        wanted = [f"{key}={value}" for key, value in self.labels().items()]
        if uid is not None:
            wanted.append(f"{LABEL}.slot={uid}")
        found: list[dict[str, Any]] = api.containers(all=True, filters={"label": wanted})
        return found

    def cpus(self) -> tuple[int, ...]:
        """The executor's own CPUs (the engine refuses a cpuset it does not have: the container's
        creation fails, a SandboxError)."""
        return tuple(sorted(os.sched_getaffinity(0)))

    def open(self, slot: Slot, label: str) -> DockerSandbox:
        sandbox = DockerSandbox(self, slot, label)
        try:
            for stale in self.leftovers(sandbox.api, slot.uid):  # a dead worker's, for this slot
                log.warning("%s: removing container %s left by a dead worker", label, stale["Id"][:12])
                sandbox.remove(stale["Id"])
            sandbox.hold()
        except FAILURES as exc:
            sandbox.api.close()
            raise SandboxError(f"the Docker engine failed: {exc}") from exc
        with self._lock:
            self._open.add(sandbox)
        return sandbox

    def forget(self, sandbox: DockerSandbox) -> None:
        with self._lock:
            self._open.discard(sandbox)

    def sweep(self, pool: SlotPool) -> int:
        """Removes containers of this state directory whose slot nobody holds (their worker
        died). Returns how many."""
        swept = 0
        api = self.client(self.config.docker.remove_timeout)
        try:
            for found in self.leftovers(api):
                uid = found.get("Labels", {}).get(f"{LABEL}.slot", "")
                if not uid.isdigit():
                    continue
                with pool.idle(int(uid)) as free:
                    if free:
                        log.warning("removing container %s left by a dead worker", found["Id"][:12])
                        try:
                            api.remove_container(found["Id"], force=True)
                            swept += 1
                        except docker.errors.NotFound:
                            pass  # another worker sharing this state directory swept it first
        except FAILURES as exc:
            log.error("sweeping Docker containers failed: %s", exc)
        finally:
            api.close()
        return swept

    def close(self) -> None:
        with self._lock:
            still = list(self._open)
        for sandbox in still:
            sandbox.close()
