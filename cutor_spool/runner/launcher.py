"""The launcher every child goes through: its cgroups, rlimits, uid and stdin, then the job.

Docker sets rlimits per container, not per exec, and an exec's stdin through the API is a stream
whose end-of-file must be signalled by half-closing the hijacked connection. Stages need both per
exec, whatever is in the image (which may have no `prlimit`, or no shell at all). So a tiny static
program is bind-mounted read-only into every container:

    cutor-launch [oom=N] [cgroup=PATH]... [cpu=S:H] [fsize=N] [nofile=N] [stack=N] [core=N]
                 [nproc=N] [as=N] [stdin=PATH] [user=UID:GID] [guard=yes] [report=PATH] [init=yes]
                 [marker=no|stderr] -- argv...
    cutor-launch keep PATH

Options take effect in their order. `oom` sets the launcher's `oom_score_adj`, which the job
inherits: every stage and build starts at STAGE_OOM_SCORE_ADJ, the OOM killer's first choice, while
the worker that starts it has lowered its own (watcher/lost.py: a job's memory must not take its
worker down); set by root (on the host), it is also the least the job may lower it to. `cgroup`
writes the launcher's pid into a `cgroup.procs` file; the limits are set (soft:hard, or one value
for both); `stdin` is opened as fd 0; `user` drops every group, sets the real, effective and saved
gid and uid, checks that root cannot be regained, and sets no_new_privs. `guard` (after a `cgroup`)
runs the job in a child and stays as its guard: if the worker dies, it kills everything in the first
cgroup (a build's Nix, whose sandboxed builders are not its children). `init` (for stages) also
runs the job in a child, stays as its parent and the reaper of its orphans, and when the job ends
writes the job's own raw wait status to `report` (see `ExitReport`) and exits as the job did: the
stage's verdict is read from that status, not from an exit code in which `exit 139` and a SIGSEGV
look alike. Then it writes the stage's started marker to stdout (stage.STARTED_MARKER), or stderr
with `marker=stderr`, unless `marker=no`, and execs the job.

The bubblewrap backend runs it twice: inside the sandbox as its pid 1 (`init=yes`, in tini's place:
the job cannot signal its namespace's init at all), and on the host in place of `sh -c <attach to cgroups>`, `prlimit`
and `setpriv` (5 ms of process starts per stage, measured: a static launcher takes 0.5 ms), with
`marker=no`: there the marker is written inside the sandbox, once bubblewrap has set it up. The
builder starts every Nix process of a build through it too (`host_argv`), in the build's cgroup
with `guard=yes` and no `user`: Nix stays root, to hand the build to its own build users.

`keep` is the container's keeper, the child of docker-init that keeps the container alive between
stages: it waits for a shared lock on PATH, a file on which the worker's sandbox holds an
exclusive lock for as long as it lives. A worker that dies (SIGKILL, a crash) loses its lock, the
keeper gets its own and exits, and the container ends with every process in it, as bubblewrap's
`--die-with-parent` does; the engine would otherwise keep the jobs of a dead worker running. Its
own failures exit with LAUNCH_FAILED and a `cutor-launch:` line on stderr, before any job code
runs; the marker comes just before the job, so that a job cannot pass its own failure off as the
launcher's.

It is compiled once per state directory with the host's C compiler (gcc and libc6-dev are runtime
dependencies) and linked statically, so it runs in any image; or built ahead by a packager and
named in $CUTOR_SPOOL_LAUNCHER (the flake's package does: nix/launcher.nix). Its source is
launcher.c, next to this module, which builds its argv.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import stat
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cutor_spool.errors import SandboxError
from cutor_spool.limits import Limits

LAUNCH_FAILED = 125
MOUNT_POINT = "/run/cutor-launch"  # where it is bound in containers (a file)
ALIVE_POINT = "/run/cutor-alive"  # the keeper's lock file
PREBUILT_ENV = "CUTOR_SPOOL_LAUNCHER"
STDIN_NAME = ".stdin"  # in the slot's io directory: /run/cutor/.stdin inside
REPORT_NAME = ".exit"  # the job's wait status, a FIFO in the slot's io directory (see ExitReport)
REPORT_POINT = f"/run/cutor/{REPORT_NAME}"
REPORT_ENV = "CUTOR_REPORT"  # the report's token, for the launcher only (it takes it out of the environment)
STAGE_OOM_SCORE_ADJ = 1000  # a stage's processes are the OOM killer's first choice
OOM = f"oom={STAGE_OOM_SCORE_ADJ}"
# The launcher's work done by a shell, `choom`, `prlimit` and `setpriv` on a host without a C compiler.
LAUNCH = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'

SOURCE = (Path(__file__).parent / "launcher.c").read_text()


def rlimit_options(limits: Limits, nproc: int) -> list[str]:
    """The stage's rlimits as options (`cpu=S:H`, ...); `prlimit` takes them with a `--`."""
    cpu_soft = max(1, int(limits.cpu_time + 0.999))
    return [
        f"cpu={cpu_soft}:{cpu_soft + 1}",
        f"fsize={limits.file_size}",
        f"nofile={limits.open_files}",
        f"stack={limits.stack}",
        "core=0",
        f"nproc={nproc}",
        *([f"as={limits.address_space}"] if limits.address_space else []),
    ]


def parent_options(marker: str = "") -> list[str]:
    """The options that make the launcher the job's parent, reporting its wait status (ExitReport)."""
    return ["init=yes", f"report={REPORT_POINT}", *([f"marker={marker}"] if marker else [])]


def exec_argv(limits: Limits, nproc: int, command: tuple[str, ...]) -> list[str]:
    """A Docker exec's argv inside its container: the limits, stdin from the io directory, the
    launcher as the job's parent. Pure."""
    rlimits = rlimit_options(limits, nproc)
    return [MOUNT_POINT, OOM, *rlimits, f"stdin=/run/cutor/{STDIN_NAME}", *parent_options(), "--", *command]


@dataclass
class ExitReport:
    """How a stage's job ended, as its parent (the launcher, `init=yes`) saw it: the raw wait status.

    A FIFO in the slot's io directory (/run/cutor/.exit inside), owned by root and write-only for
    the job's uid, so the job cannot read (steal) what is written there; the worker holds it open
    for reading and writing (it never sees an end of file, and the launcher's non-blocking open
    always finds a reader). The launcher writes `<token> <status>`; the token, random per stage, is
    handed to the launcher alone (in $CUTOR_REPORT, which it takes out of the job's environment;
    it is not dumpable, so the job cannot read it in /proc): a line the job writes itself does
    not carry it and is ignored. No report (the launcher was killed, or the FIFO filled by the job)
    leaves the stage to be judged from its exit code, as before."""

    fd: int
    token: str

    @classmethod
    def open(cls, io_dir: Path) -> ExitReport:
        path = io_dir / REPORT_NAME
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.mkfifo(path, 0o600)
        # write-only for the job's uid: it may not read the launcher's line (and its token)
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)  # noqa: S103
        return cls(os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC), secrets.token_hex(16))

    def env(self) -> dict[str, str]:
        return {REPORT_ENV: self.token}

    def status(self) -> int | None:
        """The job's raw wait status, if the launcher reported it. Reads what is there, now."""
        data = bytearray()
        with contextlib.suppress(BlockingIOError):
            while len(data) < (1 << 20) and (chunk := os.read(self.fd, 65536)):
                data += chunk
        return parse_report(bytes(data), self.token)

    def close(self) -> None:
        os.close(self.fd)


def parse_report(data: bytes, token: str) -> int | None:
    """The wait status in the launcher's line of `data` (see ExitReport); None if there is none."""
    for line in data.split(b"\n"):
        fields = line.split()
        if len(fields) == 2 and fields[0] == token.encode() and fields[1].isdigit():
            return int(fields[1])
    return None


def host_argv(
    launcher: Path | None,
    procs_files: Sequence[Path],
    *,
    rlimits: Sequence[str] = (),
    user: tuple[int, int] | None = None,
    guard: bool = False,
) -> list[str]:
    """The argv prefix that starts a child on this host: in the cgroups of `procs_files`, with
    `rlimits` (see rlimit_options), as `user` (uid, gid) if given, and guarded (see the module's
    docstring) if asked, the OOM killer's first choice. Pure. With `launcher` None (a host without a
    C compiler) a shell, `choom`, `prlimit` and `setpriv` do the same, about 5 ms slower per start;
    they cannot guard."""
    if launcher is not None:
        return [
            str(launcher),
            OOM,
            *(f"cgroup={path}" for path in procs_files),
            *rlimits,
            *([f"user={user[0]}:{user[1]}"] if user else []),
            *(["guard=yes"] if guard else []),
            "marker=no",
            "--",
        ]
    if guard:
        raise SandboxError("a guarded start needs the static launcher (a C compiler: apt install gcc libc6-dev)")
    argv = ["/bin/sh", "-c", LAUNCH, "cutor-launch", *map(str, procs_files), "--"]
    argv += ["choom", "-n", str(STAGE_OOM_SCORE_ADJ), "--"]
    if rlimits:
        argv += ["prlimit", *(f"--{option}" for option in rlimits), "--"]
    if user:
        uid, gid = user
        argv += ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--no-new-privs", "--"]
    return argv


def publish(launcher: Path, directory: Path) -> Path:
    """The launcher, copied (once, atomically) into `directory`, a tmpfs the sandboxes bind it from
    (their mountinfo then names no host path)."""
    target = directory / launcher.name
    if target.is_file() and target.stat().st_size == launcher.stat().st_size:
        return target
    fresh = directory / f".{launcher.name}.{os.getpid()}"
    shutil.copyfile(launcher, fresh)
    fresh.chmod(0o755)
    os.rename(fresh, target)
    return target


def launcher_dir(state_dir: Path) -> Path:
    """Where both backends keep the launcher they build: one compile per state directory."""
    return state_dir / "launcher"


def build_launcher(directory: Path) -> Path:
    """The static launcher for this source, compiled once (concurrent workers race harmlessly:
    each compiles to a private name and renames into place). A packager may build it ahead
    (cutor_spool/runner/launcher.c, linked statically) and name it in $CUTOR_SPOOL_LAUNCHER
    instead."""
    prebuilt = os.environ.get(PREBUILT_ENV)
    if prebuilt:
        if not os.access(prebuilt, os.X_OK):
            raise SandboxError(f"${PREBUILT_ENV}: {prebuilt} is not an executable file")
        return Path(prebuilt)
    digest = hashlib.sha256(SOURCE.encode()).hexdigest()[:16]
    target = directory / f"cutor-launch-{digest}"
    if target.is_file():
        return target
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise SandboxError("no C compiler to build the launcher with (apt install gcc libc6-dev)")
    directory.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(4)
    source, output = directory / f".launch-{token}.c", directory / f".launch-{token}"
    source.write_text(SOURCE)
    try:
        done = subprocess.run(
            [compiler, "-static", "-Os", "-s", "-o", str(output), str(source)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SandboxError(f"cannot build the launcher (a static libc is needed): {done.stderr.strip()}")
        output.chmod(0o755)
        os.rename(output, target)
    finally:
        source.unlink(missing_ok=True)
        output.unlink(missing_ok=True)
    return target
