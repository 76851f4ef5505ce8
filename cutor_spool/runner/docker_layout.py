"""How the Docker backend's containers are made: mounts, host settings, the prepared /etc.

`mounts` and `host_config` are pure functions of the spool's configuration, the slot and the kind
of container (they can be read and tested as data); `write_etc` prepares, once per state
directory, the files they bind. Used by `docker_sandbox.py` when a submission's stage first needs a
container.
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docker.types import LogConfig, Mount, Ulimit

from cutor_spool.atomic import write_bytes
from cutor_spool.errors import SandboxError
from cutor_spool.runner.launcher import ALIVE_POINT, MOUNT_POINT
from cutor_spool.runner.launcher import publish as publish  # noqa: PLC0414 - re-exported from its old home
from cutor_spool.runner.slots import Slot, slot_accounts

OVERHEAD_PROCESSES = 2  # docker-init and the keeper count in every container's pids
DEFAULT_SOCKET = "unix:///var/run/docker.sock"


def engine_socket(url: str | None) -> str:
    """The engine's unix socket path. A remote engine is refused: stages are limited and
    accounted through the containers' cgroups, which must be on this host."""
    url = url or os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET
    if not url.startswith("unix://"):
        raise SandboxError(f"the Docker backend needs this host's engine through its unix socket, not {url}")
    return url.removeprefix("unix://")


@dataclass(frozen=True)
class ContainerKey:
    workdir: str  # "work" (the submission's stages) or "aux" (a checker's)
    network: bool
    ro_binds: tuple[str, ...]


@dataclass(frozen=True)
class Layout:
    """Everything about containers that does not change between submissions."""

    image: str
    launcher: Path
    etc: Path  # passwd, group, hosts, resolv.conf
    alive: Path  # a lock file per slot uid, held by the slot's sandbox (see `cutor-launch keep`)
    tmp_size: int
    network: str
    extra_ro: tuple[str, ...]
    bind_host_usr: bool
    maximum_memory: int
    maximum_processes: int
    ulimits: tuple[tuple[str, int], ...]  # the ceilings a stage's launcher lowers its rlimits from
    seccomp: tuple[str, ...] = ()  # the seccomp profile's security_opt entry (runner/seccomp.py)


def alive_file(layout: Layout, slot: Slot) -> Path:
    return layout.alive / str(slot.uid)


def lock_alive(path: Path, uid: int) -> int:
    """Takes a slot's alive lock (exclusive) and returns its fd: the slot's containers' keepers
    wait for a shared lock on it, and end their containers when this process lets go of it."""
    path.parent.mkdir(mode=0o755, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.fchmod(fd, 0o644)  # the keeper, as the slot's uid, opens it to wait on it
        deadline = time.monotonic() + 5.0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:  # a keeper of a dead worker's container, about to exit
                if time.monotonic() > deadline:
                    raise SandboxError(f"{path} stays locked: a container of slot {uid} lives on") from None
                time.sleep(0.01)
    except BaseException:
        os.close(fd)
        raise


def mounts(layout: Layout, slot: Slot, key: ContainerKey) -> list[Mount]:
    """The container's mounts. Pure."""
    out = [
        Mount("/work", str(slot.writable(key.workdir)), type="bind"),
        Mount("/run/cutor", str(slot.io), type="bind", read_only=True),
        Mount(MOUNT_POINT, str(layout.launcher), type="bind", read_only=True),
        Mount(ALIVE_POINT, str(alive_file(layout, slot)), type="bind", read_only=True),
        Mount("/etc/passwd", str(layout.etc / "passwd"), type="bind", read_only=True),
        Mount("/etc/group", str(layout.etc / "group"), type="bind", read_only=True),
    ]
    if not key.network:  # otherwise the engine's own, for its network
        out.append(Mount("/etc/hosts", str(layout.etc / "hosts"), type="bind", read_only=True))
        out.append(Mount("/etc/resolv.conf", str(layout.etc / "resolv.conf"), type="bind", read_only=True))
    if layout.bind_host_usr:
        out.append(Mount("/usr", "/usr", type="bind", read_only=True))
    for path in dict.fromkeys((*layout.extra_ro, *key.ro_binds)):
        out.append(Mount(path, path, type="bind", read_only=True))
    return out


def host_config(layout: Layout, slot: Slot, key: ContainerKey) -> dict[str, Any]:
    """Arguments of `create_host_config`. Pure."""
    tmpfs = f"rw,exec,nosuid,nodev,size={layout.tmp_size},mode=1777"
    return {
        "init": True,
        "network_mode": layout.network if key.network else "none",
        "read_only": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges", *layout.seccomp],
        "pids_limit": layout.maximum_processes + OVERHEAD_PROCESSES,
        "mem_limit": layout.maximum_memory,
        "memswap_limit": layout.maximum_memory,
        "tmpfs": {"/tmp": tmpfs},
        "shm_size": layout.tmp_size,
        "ipc_mode": "private",
        "log_config": LogConfig(type="none"),
        "mounts": mounts(layout, slot, key),
        "ulimits": [Ulimit(name=name, soft=value, hard=value) for name, value in layout.ulimits],
        # CPU pinning: the slot's CPU, for every process of the container (the engine's cpuset)
        **({"cpuset_cpus": str(slot.cpu)} if slot.cpu is not None else {}),
    }


def write_etc(directory: Path, *, uid_base: int, slots: int) -> None:
    """The slot users, as the bubblewrap backend's /etc has them; hosts and an empty resolv.conf
    for stages without network."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        **slot_accounts(uid_base, slots),
        "hosts": "127.0.0.1 localhost sandbox\n::1 localhost\n",
        "resolv.conf": "",
    }
    for name, text in files.items():
        path = directory / name
        if not path.is_file() or path.read_text() != text:
            write_bytes(path, text.encode())
            path.chmod(0o644)
