"""What a bubblewrap stage is made of, as data: its command line built by pure functions (testable
without running anything); the /etc it sees is sandbox_etc.py's. `bwrap.py` runs it; its docstring
says why each part is there.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cutor_spool.errors import SandboxError
from cutor_spool.limits import Limits
from cutor_spool.runner.launcher import MOUNT_POINT, REPORT_ENV, host_argv, parent_options, rlimit_options
from cutor_spool.runner.seccomp import bwrap_args

# Processes the sandbox itself adds to the job's count: bwrap's monitor and pid 1 (the launcher, or tini).
OVERHEAD_PROCESSES = 2
# Write STARTED_MARKER, on stdout or (for a stage whose stdout goes to another process) stderr.
STARTED_WRAPPER = "printf '\\036cutor-stage\\036' && exec \"$@\""
STARTED_WRAPPER_STDERR = "printf '\\036cutor-stage\\036' >&2 && exec \"$@\""
BASE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/work",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "USER": "sandbox",
    "LOGNAME": "sandbox",
    "SHELL": "/bin/sh",
}


def stage_launch_argv(
    procs_files: list[Path], limits: Limits, uid: int, gid: int, launcher: Path | None = None
) -> list[str]:
    """A stage's start on the host: its cgroups, its rlimits (the sandbox's own processes
    counted), the slot's uid. The bwrap argv follows."""
    rlimits = rlimit_options(limits, limits.processes + OVERHEAD_PROCESSES)
    return host_argv(launcher, procs_files, rlimits=rlimits, user=(uid, gid))


def system_mounts(root: Path = Path("/")) -> list[str]:
    """/usr read-only, and the top-level bin/lib directories as symlinks (merged /usr) or binds."""
    args = ["--ro-bind", str(root / "usr"), "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = root / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), f"/{name}"]
        elif path.is_dir():
            args += ["--ro-bind", str(path), f"/{name}"]
    return args


@dataclass(frozen=True)
class BwrapLayout:
    """Everything about the sandbox's filesystem that does not change between stages."""

    init: str  # host path of a tini binary, bound at /init when there is no launcher
    system: tuple[str, ...]
    tmp_size: int
    etc: Path  # the prepared /etc (see sandbox_etc.prepare_etc)
    etc_net: Path  # the same, plus name resolution, for stages with network
    extra_ro: tuple[str, ...] = ()
    # The static launcher (published on a tmpfs), bound at launcher.MOUNT_POINT: the sandbox's pid 1
    # and the job's parent, which reports the job's wait status (launcher.ExitReport). None: tini
    # and a shell's `exec`, and the verdict is read from the exit code alone.
    launcher: Path | None = None


def sandbox_init(layout: BwrapLayout, command: tuple[str, ...], *, marker: str = "stdout") -> list[str]:
    """What bwrap runs as pid 1: the launcher as the job's parent, or tini and a shell that writes
    the started marker (on stdout, or on stderr for a stage whose stdout is another process's)."""
    if layout.launcher is not None:
        return [MOUNT_POINT, *parent_options("stderr" if marker == "stderr" else ""), "--", *command]
    wrapper = STARTED_WRAPPER_STDERR if marker == "stderr" else STARTED_WRAPPER
    return ["/init", "--", "/bin/sh", "-c", wrapper, "cutor-stage", *command]


def ro_bind(src: str | Path, dest: str | None = None) -> list[str]:
    return ["--ro-bind", str(src), dest or str(src)]


def bind(src: str | Path, dest: str) -> list[str]:
    return ["--bind", str(src), dest]


def tmpfs(dest: str, size: int) -> list[str]:
    return ["--size", str(size), "--tmpfs", dest]


def system_and_etc(layout: BwrapLayout, *, network: bool) -> list[str]:
    """/usr and the top-level links, and the prepared /etc (with name resolution for a stage with
    network). The first of a stage's read-only mounts, fresh (bwrap_argv) or warm (keeper.tree_args)."""
    return [*layout.system, *ro_bind(layout.etc_net if network else layout.etc, "/etc")]


def pid1_bind(layout: BwrapLayout) -> list[str]:
    """The sandbox's pid 1: the launcher at launcher.MOUNT_POINT, or tini at /init without it."""
    return ro_bind(layout.launcher, MOUNT_POINT) if layout.launcher is not None else ro_bind(layout.init, "/init")


def store_binds(layout: BwrapLayout, ro_binds: Sequence[str]) -> list[str]:
    """A read-only bind, at the same path, of each of `sandbox.ro_binds` and the stage's store paths."""
    return [arg for path in (*layout.extra_ro, *ro_binds) for arg in ro_bind(path)]


def setenv(env: Mapping[str, str]) -> list[str]:
    return [arg for key, value in env.items() for arg in ("--setenv", key, value)]


def env_args(env: Mapping[str, str]) -> bytes:
    """The stage's environment as bwrap's `--args FD` reads it (NUL-separated `--setenv NAME VALUE`),
    so that it is not on the command line, which every user of the host can read in /proc: a
    deployment's secrets are in it (runner/invocations/)."""
    args = setenv({**BASE_ENV, **env})
    if any("\0" in arg for arg in args):
        raise SandboxError("an environment variable holds a NUL byte")
    return b"".join(arg.encode("utf-8", "surrogateescape") + b"\0" for arg in args)


def bwrap_argv(
    layout: BwrapLayout,
    *,
    slot_root: Path,
    workdir: str,
    network: bool,
    ro_binds: tuple[str, ...],
    env: Mapping[str, str],
    status_fd: int,
    command: tuple[str, ...],
    seccomp_fd: int | None = None,
    marker: str = "stdout",
    report_token: str = "",
    env_fd: int | None = None,
) -> list[str]:
    """The whole bwrap command line for one stage, `command` the job's. Pure, so it can be read and
    tested as data. Writable: /work (the slot's tmpfs), /tmp and /dev/shm (size-capped tmpfs);
    nothing else. `report_token` is the launcher's (launcher.ExitReport). With `env_fd` (a
    descriptor holding `env_args(env)`, the report's token included) the environment is read
    from it instead of the command line."""
    report = {REPORT_ENV: report_token} if layout.launcher is not None and report_token else {}
    environment = setenv({**BASE_ENV, **env, **report}) if env_fd is None else ["--args", str(env_fd)]
    namespaces = ["--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if not network:
        namespaces.append("--unshare-net")
    return [
        "bwrap", *namespaces, "--disable-userns", "--die-with-parent", "--new-session", "--hostname", "sandbox",
        *system_and_etc(layout, network=network),
        "--proc", "/proc",
        "--dev", "/dev", *tmpfs("/dev/shm", layout.tmp_size), "--remount-ro", "/dev",
        *tmpfs("/tmp", layout.tmp_size),
        *bind(slot_root / workdir, "/work"),
        *ro_bind(slot_root / "io", "/run/cutor"),
        *pid1_bind(layout),
        *store_binds(layout, ro_binds),
        "--remount-ro", "/", "--chdir", "/work", "--clearenv", *environment,
        "--json-status-fd", str(status_fd), *bwrap_args(seccomp_fd), "--as-pid-1", "--",
        *sandbox_init(layout, command, marker=marker),
    ]  # fmt: skip


def check_reachable(state_dir: Path) -> None:
    """bubblewrap runs as the slot's uid (the launcher drops to it first), so it binds only what
    that uid can reach: the state directory's etc, slot and io directories. A state directory
    under a directory that others may not traverse (a 0700 home or temporary directory) would fail
    every stage's setup; say so once, at start, before any submission is claimed."""
    path = state_dir.resolve()
    for directory in (path, *path.parents):
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            raise SandboxError(
                f"the state directory {state_dir} is out of the sandbox uids' reach: {directory} has mode "
                f"{stat.S_IMODE(mode):04o} and others may not traverse it; use one whose every parent is "
                f"o+x (the default is /run/cutor-spool), or chmod o+x {directory}"
            )


def find_init() -> str:
    for name in ("tini-static", "tini"):
        path = shutil.which(name)
        if path:
            return os.path.realpath(path)
    raise SandboxError("tini is not installed (apt install tini): the sandbox needs it as pid 1")
