"""The bubblewrap backend (the default; no daemon).

A stage is launched as

    cutor-launch cgroup=<procs>... <rlimits> user=<slot uid>:<gid> marker=no -- bwrap <namespaces,
    mounts> -- /init (tini, pid 1) -- sh -c <write the started marker; exec> -- <the job>

- cutor-launch is the static launcher of launcher.py, one process start (0.5 ms). On a host
  without a C compiler the same is done by `sh -c <attach to cgroups> -- prlimit <rlimits> --
  setpriv <uid>`, about 5 ms more per stage.
- The job runs as the slot's unprivileged uid, never root (as root, RLIMIT_NPROC does not hold
  and root-owned 0600 files would be readable). The launcher drops to it before bwrap, so bwrap
  runs unprivileged and builds its user namespace with that uid mapped to itself.
- The launcher puts itself into the stage's cgroups before exec, so every process the job ever
  makes is counted; prlimits are set in the argv, not by `preexec_fn` (which forces fork() in a
  large parent).
- tini is pid 1 and the job its child: pid 1 ignores default-action signals (SIGXCPU at the CPU
  limit, SIGPIPE, SIGXFSZ), and bwrap's own pid 1 would leave zombies that count against
  RLIMIT_NPROC.
- New user, pid, net, ipc, uts and cgroup namespaces; nested user namespaces disabled; `/usr` and
  the Nix store paths read-only; only /work and a size-capped /tmp writable; / itself read-only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import secrets
import selectors
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cutor_spool.config import SeccompConfig
from cutor_spool.errors import SandboxError
from cutor_spool.limits import Limits
from cutor_spool.runner.capture import Capture
from cutor_spool.runner.cgroups import Cgroup, CgroupHost
from cutor_spool.runner.launcher import build_launcher, launcher_dir, rlimit_options
from cutor_spool.runner.seccomp import bwrap_args, policy, write_filter
from cutor_spool.runner.slots import Slot, SlotPool, slot_accounts
from cutor_spool.runner.stage import STARTED_MARKER, STOPPED_BY_US, StageOutput, StageSpec, conclude, internal_error
from cutor_spool.runner.supervise import LimitWatch

log = logging.getLogger(__name__)

NAME = "bubblewrap"
# Processes the sandbox itself adds to the job's count: bwrap's monitor and tini.
OVERHEAD_PROCESSES = 2
LAUNCH = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
# What of the host's /etc a job may see: copied (symlinks kept as symlinks) into one directory per
# host that is bound at /etc in a single mount; ten separate binds cost 3 ms per stage.
SAFE_ETC = (
    "alternatives",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "os-release",
    "debian_version",
    "mime.types",
    "protocols",
    "services",
)
NETWORK_ETC = ("resolv.conf", "nsswitch.conf", "ssl", "ca-certificates", "gai.conf", "host.conf", "hosts")
STARTED_WRAPPER = "printf '\\036cutor-stage\\036' && exec \"$@\""  # writes STARTED_MARKER
BASE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/work",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "USER": "sandbox",
    "LOGNAME": "sandbox",
    "SHELL": "/bin/sh",
}


def launch_argv(procs_files: list[Path], limits: Limits, uid: int, gid: int, launcher: Path | None = None) -> list[str]:
    """Attach to cgroups, set rlimits, drop to the slot's uid. Pure; the bwrap argv follows.
    With the static launcher (see launcher.py) it is one process start; without it (no C
    compiler on the host) a shell, `prlimit` and `setpriv`, which cost about 5 ms more."""
    nproc = limits.processes + OVERHEAD_PROCESSES
    if launcher is not None:
        return [
            str(launcher),
            *(f"cgroup={path}" for path in procs_files),
            *rlimit_options(limits, nproc),
            f"user={uid}:{gid}",
            "marker=no",
            "--",
        ]
    return [
        "/bin/sh",
        "-c",
        LAUNCH,
        "cutor-launch",
        *map(str, procs_files),
        "--",
        "prlimit",
        *(f"--{option}" for option in rlimit_options(limits, nproc)),
        "--",
        "setpriv",
        f"--reuid={uid}",
        f"--regid={gid}",
        "--clear-groups",
        "--no-new-privs",
        "--",
    ]


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

    init: str  # host path of a tini binary, bound at /init
    system: tuple[str, ...]
    tmp_size: int
    etc: Path  # the prepared /etc (see prepare_etc)
    etc_net: Path  # the same, plus name resolution, for stages with network
    extra_ro: tuple[str, ...] = ()


def ro_bind(src: str | Path, dest: str | None = None) -> list[str]:
    return ["--ro-bind", str(src), dest or str(src)]


def bind(src: str | Path, dest: str) -> list[str]:
    return ["--bind", str(src), dest]


def tmpfs(dest: str, size: int) -> list[str]:
    return ["--size", str(size), "--tmpfs", dest]


def setenv(env: Mapping[str, str]) -> list[str]:
    return [arg for key, value in env.items() for arg in ("--setenv", key, value)]


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
) -> list[str]:
    """The whole bwrap command line for one stage. Pure, so it can be read and tested as data.
    Writable: /work (the slot's tmpfs), /tmp and /dev/shm (size-capped tmpfs); nothing else."""
    namespaces = ["--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if not network:
        namespaces.append("--unshare-net")
    return [
        "bwrap", *namespaces, "--disable-userns", "--die-with-parent", "--new-session", "--hostname", "sandbox",
        *layout.system,
        *ro_bind(layout.etc_net if network else layout.etc, "/etc"),
        "--proc", "/proc",
        "--dev", "/dev", *tmpfs("/dev/shm", layout.tmp_size), "--remount-ro", "/dev",
        *tmpfs("/tmp", layout.tmp_size),
        *bind(slot_root / workdir, "/work"),
        *ro_bind(slot_root / "io", "/run/cutor"),
        *ro_bind(layout.init, "/init"),
        *[arg for path in (*layout.extra_ro, *ro_binds) for arg in ro_bind(path)],
        "--remount-ro", "/", "--chdir", "/work", "--clearenv", *setenv({**BASE_ENV, **env}),
        "--json-status-fd", str(status_fd), *bwrap_args(seccomp_fd), "--as-pid-1", "--", "/init", "--", *command,
    ]  # fmt: skip


def _stop(proc: subprocess.Popen[bytes], cgroup: Cgroup, *, started: bool) -> None:
    """Kills the sandbox from the inside out (see `Cgroup.kill`), then its monitor if need be.
    Before bwrap has started the sandbox there is no inside: everything goes at once."""
    cgroup.kill(spare=proc.pid if started else None)
    try:
        proc.wait(timeout=2.0)
    except subprocess.TimeoutExpired:
        cgroup.kill()
        proc.wait()


def _etc_sources(network: bool) -> list[tuple[str, str, bytes]]:
    """(relative name, kind, content) of what the sandbox's /etc holds; kinds l(ink), f(ile), d(ir)."""
    found: list[tuple[str, str, bytes]] = []
    pending = [Path(name) for name in SAFE_ETC + (NETWORK_ETC if network else ())]
    while pending:
        rel = pending.pop()
        src = Path("/etc") / rel
        if src.is_symlink():
            found.append((str(rel), "l", os.readlink(src).encode()))
        elif src.is_dir():
            found.append((str(rel), "d", b""))
            pending.extend(rel / child for child in sorted(os.listdir(src)))
        elif src.is_file():
            found.append((str(rel), "f", src.read_bytes()))
    return sorted(found)


def prepare_etc(base: Path, *, uid_base: int, slots: int, network: bool) -> Path:
    """The directory that is the sandbox's /etc for this host's files as they are now.

    Content-addressed (`etc-<digest>`), built once and never changed after: executors of a host
    agree on it without locks, and a new one appears only when the host's files change (new
    libraries: a new ld.so.cache). Swapping one directory in place was seen to leave a moment
    with no /etc at all, and a concurrent stage failed to start."""
    entries = _etc_sources(network)
    synthetic = slot_accounts(uid_base, slots)
    if not network:
        synthetic["hosts"] = "127.0.0.1 localhost sandbox\n::1 localhost\n"
    entries = [e for e in entries if e[0] not in synthetic] + [(k, "f", v.encode()) for k, v in synthetic.items()]
    digest = hashlib.sha256(repr(sorted(entries)).encode()).hexdigest()[:16]
    target = base / f"{'etc-net' if network else 'etc'}-{digest}"
    if target.is_dir():
        return target
    fresh = base / f".build-{target.name}-{os.getpid()}-{secrets.token_hex(3)}"
    fresh.mkdir(mode=0o755, parents=True)
    for rel, kind, content in sorted(entries):
        dst = fresh / rel
        if kind == "d":
            dst.mkdir(mode=0o755, exist_ok=True)
        elif kind == "l":
            os.symlink(content.decode(), dst)
        else:
            dst.write_bytes(content)
            dst.chmod(0o644)
    try:
        os.rename(fresh, target)
    except OSError:  # another executor published the same directory first
        shutil.rmtree(fresh, ignore_errors=True)
    return target


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


def _find_init() -> str:
    for name in ("tini-static", "tini"):
        path = shutil.which(name)
        if path:
            return os.path.realpath(path)
    raise SandboxError("tini is not installed (apt install tini): the sandbox needs it as pid 1")


class BubblewrapBackend:
    name = NAME

    def __init__(
        self,
        *,
        state_dir: Path,
        uid_base: int,
        slots: int,
        tmp_size: int,
        extra_ro: list[str] | None = None,
        launcher: bool = True,
        seccomp: SeccompConfig | None = None,
    ) -> None:
        """`launcher=False` uses `prlimit` and `setpriv` even where the static launcher builds;
        `seccomp` is the spool's system call filter (on, with the default policy, when not given)."""
        if shutil.which("bwrap") is None:
            raise SandboxError("bubblewrap is not installed (apt install bubblewrap)")
        state_dir.mkdir(parents=True, exist_ok=True)
        check_reachable(state_dir)
        self.launcher: Path | None = None
        if launcher:
            try:
                self.launcher = build_launcher(launcher_dir(state_dir))
                log.info("stages start through the launcher %s", self.launcher)
            except SandboxError as exc:
                log.warning("%s; stages start through prlimit and setpriv instead (about 5 ms slower)", exc)
        if self.launcher is None:
            for tool in ("prlimit", "setpriv"):
                if shutil.which(tool) is None:
                    raise SandboxError(f"{tool} is not installed (util-linux)")
        self._etc_args = {"uid_base": uid_base, "slots": slots}
        self._etc_base = state_dir / "etc.d"
        self._etc_stamp = -1.0
        self.layout = BwrapLayout(
            init=_find_init(),
            system=tuple(system_mounts()),
            tmp_size=tmp_size,
            etc=self._etc_base,
            etc_net=self._etc_base,
            extra_ro=tuple(extra_ro or ()),
        )
        self._refresh_etc()
        self.cgroups = CgroupHost.detect()
        seccomp = seccomp or SeccompConfig()  # the filter is on unless a spool turns it off
        self.seccomp = write_filter(state_dir / "seccomp", policy(seccomp)) if seccomp.enabled else None

    def _refresh_etc(self) -> None:
        """Points stages at the prepared /etc for the host's current files, checked cheaply by
        the mtime of ld.so.cache (new libraries) before each submission."""
        try:
            stamp = os.stat("/etc/ld.so.cache").st_mtime
        except FileNotFoundError:
            stamp = 0.0
        if stamp != self._etc_stamp or not self.layout.etc.is_dir():
            etc = prepare_etc(self._etc_base, network=False, **self._etc_args)
            etc_net = prepare_etc(self._etc_base, network=True, **self._etc_args)
            self.layout = dataclasses.replace(self.layout, etc=etc, etc_net=etc_net)
            self._etc_stamp = stamp

    def sweep(self, pool: SlotPool) -> int:
        """Removes stage cgroups left by a worker that died (SIGKILL mid-stage, host trouble), with
        whatever they still hold: a sandbox killed while bwrap was still setting it up can wait
        forever for a monitor that is gone. Only slots nobody holds are touched. Returns how many."""
        swept = 0
        for cgroup in self.cgroups.existing("u"):
            uid_text = cgroup.name[1:].partition("-")[0]
            if not uid_text.isdigit():
                continue
            with pool.idle(int(uid_text)) as free:
                if free:
                    log.warning(
                        "removing cgroup %s left by a dead worker (processes: %s)", cgroup.name, cgroup.pids() or "none"
                    )
                    cgroup.remove()
                    swept += 1
        return swept

    def open(self, slot: Slot, label: str) -> BwrapSandbox:
        self._refresh_etc()
        for stale in self.cgroups.existing(f"{slot.name}-"):  # left by a worker that was killed
            stale.remove()
        return BwrapSandbox(self, slot, label)

    def close(self) -> None:
        pass


@dataclass
class BwrapSandbox:
    backend: BubblewrapBackend
    slot: Slot
    label: str
    stages: int = field(default=0)

    @property
    def workdir(self) -> Path:
        return self.slot.work

    def close(self) -> None:
        pass

    def run(self, spec: StageSpec, cancel: threading.Event | None = None) -> StageOutput:
        self.stages += 1
        slot = self.slot
        slot.writable(spec.workdir)  # mounts the checker's aux directory on first use
        slot.reset_io()
        for name, data in spec.files.items():
            (slot.io / name).write_bytes(data)
        cgroup = self.backend.cgroups.create(f"{slot.name}-{secrets.token_hex(4)}")
        try:
            cgroup.set_limits(memory=spec.limits.memory, pids=spec.limits.processes + OVERHEAD_PROCESSES)
            return self._run(spec, cgroup, cancel)
        except OSError as exc:
            log.exception("%s: stage %s failed to run", self.label, spec.name)
            return internal_error(spec, f"sandbox failure: {exc}", NAME)
        finally:
            cgroup.remove()

    def _run(self, spec: StageSpec, cgroup: Cgroup, cancel: threading.Event | None) -> StageOutput:
        slot = self.slot
        stdin_path = slot.root / "stdin"
        stdin_path.write_bytes(spec.stdin)
        status_r, status_w = os.pipe()
        seccomp_fd = None if self.backend.seccomp is None else os.open(self.backend.seccomp, os.O_RDONLY)
        argv = launch_argv(cgroup.procs_files, spec.limits, slot.uid, slot.gid, self.backend.launcher) + bwrap_argv(
            self.backend.layout,
            slot_root=slot.root,
            workdir=spec.workdir,
            network=spec.network,
            ro_binds=spec.ro_binds,
            env=spec.env,
            status_fd=status_w,
            command=("/bin/sh", "-c", STARTED_WRAPPER, "cutor-stage", *spec.sandbox_command()),
            seccomp_fd=seccomp_fd,
        )
        started = time.monotonic()
        try:
            with open(stdin_path, "rb") as stdin:
                proc = subprocess.Popen(
                    argv,
                    stdin=stdin,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    pass_fds=(status_w,) if seccomp_fd is None else (status_w, seccomp_fd),
                    start_new_session=True,
                    env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                )
        finally:
            os.close(status_w)
            if seccomp_fd is not None:
                os.close(seccomp_fd)
        watch = LimitWatch(spec.limits, cgroup, cancel, started)
        capture = Capture(spec.limits.output, started_marker=STARTED_MARKER)
        killed_for, status_lines = self._supervise(proc, cgroup, watch, capture, status_r)
        wall = time.monotonic() - started
        cgroup.kill()  # nothing should be left; if something is, it goes now
        cpu, peak, ooms = cgroup.cpu_seconds(), cgroup.memory_peak(), cgroup.oom_kills()
        # Without the marker the sandbox never reached the job, unless we stopped it first (see
        # STOPPED_BY_US).
        started_ok = any("child-pid" in line for line in status_lines) and (
            capture.started or killed_for in STOPPED_BY_US
        )
        output = conclude(
            spec.name, spec.limits, NAME, capture=capture, started=started_ok, killed_for=killed_for,
            returncode=proc.returncode, oom_kills=ooms, cpu_time=cpu, wall_time=wall, memory=peak,
            setup_error=capture.stderr.decode("utf-8", "replace"),
        )  # fmt: skip
        if not started_ok:
            log.error("%s: %s", self.label, output.message)
        return output

    def _supervise(
        self, proc: subprocess.Popen[bytes], cgroup: Cgroup, watch: LimitWatch, capture: Capture, status_r: int
    ) -> tuple[str | None, list[str]]:
        assert proc.stdout is not None and proc.stderr is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
        sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
        sel.register(status_r, selectors.EVENT_READ, "status")
        status_buf = bytearray()
        killed_for: str | None = None
        try:
            while sel.get_map() or proc.poll() is None:
                if not sel.get_map():
                    # The job closed its outputs but lives on: wait for it, still watching limits.
                    try:
                        proc.wait(timeout=max(watch.next_wait(), 0.001))
                    except subprocess.TimeoutExpired:
                        pass
                else:
                    for key, _ in sel.select(watch.next_wait()):
                        fd = key.fd
                        data = os.read(fd, 65536)
                        if not data:
                            sel.unregister(key.fileobj)
                            continue
                        if key.data == "status":
                            status_buf += data
                        elif not capture.feed(key.data, data) and killed_for is None:
                            killed_for = "output"
                if killed_for is None:
                    killed_for = watch.check()
                if killed_for is not None:
                    _stop(proc, cgroup, started=b"child-pid" in status_buf)
                    for key in list(sel.get_map().values()):
                        sel.unregister(key.fileobj)
                    break
        finally:
            sel.close()
            proc.stdout.close()
            proc.stderr.close()
            os.close(status_r)
            if proc.poll() is None:
                _stop(proc, cgroup, started=b"child-pid" in status_buf)
        return killed_for, [line for line in status_buf.decode("utf-8", "replace").splitlines() if line.strip()]
