"""Per-host sandbox slots: an unprivileged uid each, never shared by two running submissions.

A slot is a uid (uid_base + n) with a private work area on the host's local disk. Executors on one
host coordinate through lock files (`flock`, released by the kernel when the holder dies), so two
executors never run jobs as the same uid: RLIMIT_NPROC and the kernel's per-uid accounting then
only ever see one job's processes. Before a slot is reused it is checked empty of processes.

The slot's `work` and `aux` directories are tmpfs mounts capped at `work_size`: filling /work
cannot fill the host's disk, and its pages are charged to the memory cgroup of the writer. Its
`io` directory (a stage's files, read-only at /run/cutor) is a small tmpfs too, so that what a job
reads in /proc/self/mountinfo names no host path (a bind of a directory shows its path inside the
source filesystem; a tmpfs shows "/").

A slot is private to its uid: `slots/<uid>` is root's, mode 0710, group the slot's gid, so only
root (the executor) and the slot's uid (bubblewrap binds from it as that uid) may enter it, and the
slot uid cannot rename or replace what the executor put there. Another local user cannot list or
read a running job's files, its stdin or its stage files by their predictable host paths.

With CPU pinning (spool.yaml `sandbox.pinning`) a slot is also given one CPU when it is taken: the
one the fewest slots of the host hold, every executor's (runner/cpuseats.py), so two slots share a
CPU only when more slots run than there are CPUs; among those, the one whose core's other
hyperthreads hold the fewest (siblings share a core's execution units and caches, so a neighbour
there slows a program down), then the lowest. The backend confines the slot's stages to it (a
cpuset).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import random
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cutor_spool.config import PinningConfig
from cutor_spool.cpus import format_cpu_list, thread_siblings
from cutor_spool.errors import ConfigError, SandboxError
from cutor_spool.runner.cpuseats import CpuSeats, Seat

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path(os.environ.get("CUTOR_SPOOL_STATE_DIR", "/run/cutor-spool"))
# Uids are a resource of the host, not of one executor: their locks live in one place per host
# whatever --state-dir an executor was given (two executors with two state dirs would otherwise
# run jobs as the same uid, and each would kill the other's jobs as leftovers).
LOCK_DIR = Path(os.environ.get("CUTOR_SPOOL_LOCK_DIR", "/run/cutor-spool/locks"))
# The first byte of a slot's lock file: "c" when its last holder released it clean (no process of
# the uid can be left, no stage cgroup of it), anything else (a new file, "u" in use, a holder that
# died) means scan. After the "c", the state directory it was released in: a holder of the same
# one finds the slot's mount points as they were left (empty, unmounted) and skips checking them.
_CLEAN, _IN_USE = b"c", b"u"
MS_NOSUID, MS_NODEV = 2, 4
PR_SET_CHILD_SUBREAPER = 36
EVICT_PATIENCE = 5.0  # seconds for a slot's leftovers to go (a zombie waits for its parent)
MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


# The io tmpfs's cap. Only the executor writes there (a stage's script and files: a test's input,
# expected and actual output), bounded by the submission's size and the output caps; tmpfs takes
# memory only for what is written.
IO_SIZE = 8 << 30


def _mount_tmpfs(target: Path, size: int, uid: int, gid: int, mode: int = 0o700) -> None:
    options = f"size={size},mode={mode:o},uid={uid},gid={gid},nr_inodes=200000".encode()
    if _libc.mount(b"tmpfs", str(target).encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options) != 0:
        err = ctypes.get_errno()
        raise SandboxError(f"cannot mount a tmpfs on {target}: {os.strerror(err)}")


def tmpfs_once(target: Path, size: int) -> None:
    """A root-owned 0755 tmpfs on `target`, unless one is there already (executors sharing a state
    directory take turns through a lock file beside it). For what stages are given by bind mount:
    a file bound from a tmpfs shows its path inside that tmpfs in /proc/self/mountinfo, not the
    host's path of the state directory."""
    target.mkdir(parents=True, exist_ok=True)
    fd = os.open(target.parent / f".{target.name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if not os.path.ismount(target):
            _mount_tmpfs(target, size, 0, 0, mode=0o755)
    finally:
        os.close(fd)


def _umount(target: Path) -> None:
    if _libc.umount2(str(target).encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # EINVAL: not a mount point
            raise SandboxError(f"cannot unmount {target}: {os.strerror(err)}")


def slot_accounts(uid_base: int, slots: int) -> dict[str, str]:
    """/etc/passwd and /etc/group as a job sees them: root, nobody, and a `sandbox` user for
    every slot uid (so `id`, `whoami` and getpwuid work for whichever slot runs the job)."""
    users = "".join(f"sandbox:x:{uid}:{uid}:sandbox:/work:/bin/sh\n" for uid in range(uid_base, uid_base + slots))
    groups = "".join(f"sandbox:x:{uid}:\n" for uid in range(uid_base, uid_base + slots))
    return {
        "passwd": "root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n"
        + users
        + "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        "group": "root:x:0:\n" + groups + "nogroup:x:65534:\n",
    }


def pinned_cpus(pinning: PinningConfig, available: tuple[int, ...]) -> tuple[int, ...]:
    """The CPUs slots are given on this host: `sandbox.pinning.cpus` (all if not given) that are
    `available` (the executor's own affinity and the CPUs of the cgroup stages are made in).
    None when pinning is off. A list that names no CPU of this host is a ConfigError; one that
    names some is used for those, with a warning for the rest (spool.yaml is shared by hosts)."""
    if not pinning.enabled:
        return ()
    wanted = pinning.cpus if pinning.cpus is not None else available
    cpus = tuple(sorted(set(wanted) & set(available)))
    missing = sorted(set(wanted) - set(available))
    if not cpus:
        raise ConfigError(
            f"sandbox.pinning.cpus: none of {format_cpu_list(wanted)} is a CPU this executor may use "
            f"(it may use {format_cpu_list(available)})"
        )
    if missing:
        log.warning(
            "sandbox.pinning.cpus: CPUs %s are not this executor's to use (it may use %s); pinning to %s",
            format_cpu_list(missing), format_cpu_list(available), format_cpu_list(cpus),
        )  # fmt: skip
    return cpus


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    state: str  # as in /proc/<pid>/stat: R, S, D, Z, ...
    ppid: int
    comm: str

    @classmethod
    def of(cls, pid: int) -> ProcessInfo | None:
        try:
            with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            return None
        state, ppid = stat[stat.rfind(")") + 2 :].split()[:2]
        return cls(pid, state, int(ppid), stat[stat.find("(") + 1 : stat.rfind(")")])

    def __str__(self) -> str:
        return f"{self.pid} {self.comm} (state {self.state}, parent {self.ppid})"


def become_subreaper() -> None:
    """Orphans of this process's descendants come to it rather than to the host's pid 1.

    When bubblewrap's monitor dies before the sandbox's pid 1 (a stage torn down before bwrap
    reported its child, a monitor that did not exit in time), that init's zombie is orphaned.
    Reparented to the host's pid 1 it lingers until that one reaps (every ~2 s on the machines
    this was measured on, never on a host whose pid 1 does not reap), counting against the slot
    uid's RLIMIT_NPROC and holding the slot. Reparented here, `reap_orphans` ends it at once.

    For the executor's process alone (its command calls this), never for one that merely holds
    a pool: any orphan of its descendants becomes its zombie, and only slot uids' are reaped. A
    test runner made a subreaper would keep the zombies of the executors it kills for the rest
    of its session, holding their slots."""
    if _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log.warning("cannot become a child subreaper: %s", os.strerror(ctypes.get_errno()))


def reap_orphans(uid: int) -> None:
    """Reaps the zombies of `uid` that are this process's children: orphans of a sandbox
    (`become_subreaper`). Only a slot's holder calls it, when none of its stages runs, so no
    subprocess of ours that someone still waits for is among them."""
    for pid in processes_of(uid):
        info = ProcessInfo.of(pid)
        if info is not None and info.state == "Z" and info.ppid == os.getpid():
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def processes_of(uid: int) -> list[int]:
    """Pids whose effective uid is `uid` (the owner of /proc/<pid>)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    found.append(int(name))
            except FileNotFoundError:
                continue
    return found


@dataclass
class Slot:
    uid: int
    gid: int
    root: Path
    lock_fd: int
    cpu: int | None = None  # the one CPU its stages run on, with CPU pinning
    seat: Seat | None = None  # holds its place on that CPU (runner/cpuseats.py)
    mount_aux: Callable[[], None] = lambda: None
    aux_ready: bool = False
    suspect: bool = False  # a backend could not be sure its processes are gone: scan at the next acquire
    clean: bool = False  # its last holder released it clean: no process and no stage cgroup of it is left

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def aux(self) -> Path:
        return self.writable("aux")

    @property
    def io(self) -> Path:
        return self.root / "io"

    @property
    def name(self) -> str:
        return f"u{self.uid}"

    def writable(self, which: str) -> Path:
        """The slot's `work` or `aux` directory; `aux` (a checker's, see StageSpec.workdir) is
        mounted the first time it is asked for."""
        if which not in ("work", "aux"):
            raise ValueError(which)
        if which == "aux" and not self.aux_ready:
            self.mount_aux()
            self.aux_ready = True
        return self.root / which

    def reset_io(self) -> None:
        """Empties the per-stage read-only directory (/run/cutor inside)."""
        for child in self.io.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()


class SlotPool:
    def __init__(
        self,
        *,
        uid_base: int,
        count: int,
        work_size: int,
        state_dir: Path = DEFAULT_STATE_DIR,
        cpus: tuple[int, ...] = (),
        siblings: dict[int, frozenset[int]] | None = None,
    ) -> None:
        """`cpus`: with CPU pinning, the CPUs slots are given (see the module's docstring);
        `siblings`: each one's hyperthread siblings (default: the host's topology)."""
        if os.geteuid() != 0:
            raise SandboxError(
                "the sandbox needs root to run jobs as per-slot uids and create cgroups; "
                "start the executor as root (jobs never run as root)"
            )
        self.uid_base, self.count, self.work_size = uid_base, count, work_size
        self.state_dir = state_dir
        self.cpus = cpus
        self._clean_marker = _CLEAN + os.fsencode(state_dir.absolute())
        self.lock_dir = LOCK_DIR
        self.lock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        found = siblings if siblings is not None else thread_siblings(cpus)
        self._seats = CpuSeats(self.lock_dir / "cpus", cpus, {cpu: same - {cpu} for cpu, same in found.items()})
        (state_dir / "slots").mkdir(parents=True, exist_ok=True, mode=0o711)

    def acquire(self) -> Slot:
        start = random.randrange(self.count)  # noqa: S311 - spreads executors over the range, not a secret
        for i in range(self.count):
            uid = self.uid_base + (start + i) % self.count
            fd = os.open(self.lock_dir / f"uid-{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                marker = os.pread(fd, 4096, 0)
                if marker[:1] != _CLEAN and not self._evict(uid):
                    log.error("slot uid %d still has processes; skipping it", uid)
                    os.close(fd)
                    continue
                os.pwrite(fd, _IN_USE, 0)  # until a clean release says otherwise
                slot = Slot(uid=uid, gid=uid, root=self.state_dir / "slots" / str(uid), lock_fd=fd)
                slot.clean = marker[:1] == _CLEAN
                self._prepare(slot, reused=marker == self._clean_marker)
            except BaseException:
                os.close(fd)
                raise
            if self.cpus:
                try:
                    slot.seat = self._seats.take()
                except BaseException:
                    self.release(slot)
                    raise
                slot.cpu = slot.seat.cpu
            return slot
        raise SandboxError(f"all {self.count} sandbox slots on this host are busy")

    def _evict(self, uid: int) -> bool:
        """Ends what a previous holder left (a worker killed mid-stage). True when empty.

        One warning per eviction, naming each process (pid, state, parent, command), not one per
        poll. A zombie cannot be killed, only reaped by its parent: ours (this process is a child
        subreaper, see `become_subreaper`) are reaped here; another's is waited for."""
        deadline = time.monotonic() + EVICT_PATIENCE
        found: dict[int, ProcessInfo] = {}
        while True:
            reap_orphans(uid)
            alive = [info for info in map(ProcessInfo.of, processes_of(uid)) if info is not None]
            found.update((info.pid, info) for info in alive if info.pid not in found)
            if not alive:
                if found:
                    log.warning("slot uid %d: killed leftover processes: %s", uid, "; ".join(map(str, found.values())))
                return True
            if time.monotonic() > deadline:
                log.error("slot uid %d: leftover processes stay: %s", uid, "; ".join(map(str, alive)))
                return False
            for info in alive:
                if info.state != "Z":  # a zombie is gone already: its parent has to reap it
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(info.pid, signal.SIGKILL)
            time.sleep(0.01)

    def _prepare(self, slot: Slot, *, reused: bool = False) -> None:
        """The slot's root and fresh tmpfs mounts. `reused`: released clean in this state
        directory, so its mount points are the empty directories `release` left, unless that
        directory was removed since (the mark is kept with the slot's lock, not in it)."""
        if reused and not all((slot.root / which).is_dir() for which in ("work", "aux", "io")):
            reused = False
        if not reused:
            (self.state_dir / "slots").mkdir(parents=True, exist_ok=True, mode=0o711)
        slot.root.mkdir(mode=0o710, exist_ok=True)
        # Set every time: a directory made by an older version, or left by a killed worker.
        os.chown(slot.root, 0, slot.gid, follow_symlinks=False)
        os.chmod(slot.root, 0o710, follow_symlinks=False)  # noqa: S103 - x for the slot's group only
        for which in () if reused else ("work", "aux", "io"):
            path = slot.root / which
            _umount(path)  # a mount left by a killed worker
            if path.is_symlink() or (path.exists() and not path.is_dir()):
                path.unlink()
            elif path.is_dir():
                try:
                    path.rmdir()  # the empty mount point, as always but after an older version
                except OSError:
                    shutil.rmtree(path)  # an `io` an older version kept on disk
            path.mkdir(mode=0o700)
        _mount_tmpfs(slot.work, self.work_size, slot.uid, slot.gid)
        slot.mount_aux = lambda: _mount_tmpfs(slot.root / "aux", self.work_size, slot.uid, slot.gid)
        # Root's, world-readable inside: the stage reads it, as the slot uid, read-only.
        _mount_tmpfs(slot.io, IO_SIZE, 0, 0, mode=0o755)

    @contextmanager
    def idle(self, uid: int) -> Iterator[bool]:
        """Holds uid's slot lock for the block if nobody does (yields True), else yields False."""
        fd = os.open(self.lock_dir / f"uid-{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def holders(self) -> dict[int, int]:
        """CPU -> how many slots of this host hold it now (every executor's)."""
        return self._seats.holders()

    def release(self, slot: Slot, *, clean: bool = False) -> None:
        """Frees the slot. `clean`: its holder ended every stage and closed its sandbox without an
        error, so the stages' cgroups were emptied and removed (an rmdir the kernel refuses while
        a process is left): the next `acquire` may skip its scan of /proc. Otherwise (an error,
        or a holder killed before it got here) the lock file still says "in use" and the next
        holder scans, kills and reaps before it reuses the uid."""
        if slot.seat is not None:
            CpuSeats.release(slot.seat)
            slot.seat, slot.cpu = None, None
        try:
            for which in ("work", "aux", "io"):
                _umount(slot.root / which)
            if clean and not slot.suspect:
                os.pwrite(slot.lock_fd, self._clean_marker, 0)
                os.ftruncate(slot.lock_fd, len(self._clean_marker))
        finally:
            os.close(slot.lock_fd)
