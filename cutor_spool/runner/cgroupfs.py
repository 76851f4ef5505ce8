"""The cgroup filesystem as stages' cgroups read it: control files, and where the hierarchies are.

Control files are read and written with os.open and os.read/os.write (`read_control`,
`write_control`, `read_keyed` for "key value" lines); the hierarchies are found in
/proc/self/mountinfo (`cgroup_mounts`) and this process's place in each in /proc/self/cgroup
(`own_cgroup_paths`), joined by `path_under`. runner/cgroups.py (stage cgroups) and
runner/docker_cgroup.py (a container's) build on these.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cgroup_mounts", "own_cgroup_paths", "path_under", "read_control", "read_keyed", "write_control"]


def read_control(path: Path) -> str:
    """A control file's text. os.open and os.read, not open(): read several times per stage (the
    CPU counter at each wake of its supervisor), the buffered text layer cost 3x as much."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = bytearray()
        while chunk := os.read(fd, 65536):
            data += chunk
        return data.decode("ascii")
    finally:
        os.close(fd)


def write_control(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)  # as open(path, "w")
    try:
        os.write(fd, value.encode("ascii"))
    finally:
        os.close(fd)


def read_keyed(path: Path) -> dict[str, int]:
    out = {}
    for line in read_control(path).splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def cgroup_mounts() -> list[tuple[str, str, str, str]]:
    """(root, mount point, fstype, super options) of every cgroup mount."""
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            fields, rest = left.split(), right.split()
            if len(fields) >= 5 and len(rest) >= 3 and rest[0] in ("cgroup", "cgroup2"):
                out.append((fields[3], fields[4].replace("\\040", " "), rest[0], rest[2]))
    return out


def own_cgroup_paths() -> dict[str, str]:
    """controller (or "" for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    out = {}
    with open("/proc/self/cgroup", encoding="utf-8") as fh:
        for line in fh:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                out[controller] = path
    return out


def path_under(mount_root: str, mount_point: str, own: str) -> Path:
    """Where the cgroup path `own` is in a hierarchy whose `mount_root` is mounted at `mount_point`."""
    relative = own[len(mount_root) :] if own.startswith(mount_root) and mount_root != "/" else own
    return Path(mount_point) / relative.lstrip("/")
