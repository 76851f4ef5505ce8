"""Control groups for stages: v2 where the host has a unified memory controller, v1 otherwise.

Each stage gets a fresh cgroup under the worker's own (per `/proc/self/cgroup`, so that jobs stay
inside whatever accounts for the worker). It holds every process of the stage, whatever they do
(setsid and double-forks included; a non-root process cannot leave it), which gives:

- memory: a hard limit; the OOM-kill counter, not an exit code, decides *memory limit*; the peak
  (v1 `memory.max_usage_in_bytes`, v2 `memory.peak`) is the job's memory, never `ru_maxrss`,
  which a Python parent pollutes with its own size;
- pids: a cap that stops a fork bomb;
- CPU time of all processes summed (v1 `cpuacct.usage`, v2 `cpu.stat`), so a job that forks N busy
  children cannot get N times its CPU limit: the supervisor watches the total;
- a kill that leaves nothing behind: v2 `cgroup.kill`, or freeze, SIGKILL every member, thaw;
- with CPU pinning (spool.yaml `sandbox.pinning`), the one CPU of the stage's slot: `cpuset.cpus`
  (v1 also needs `cpuset.mems`, copied from the parent). A process cannot widen its affinity past
  its cpuset (sched_setaffinity narrows a mask to it, and fails with EINVAL when nothing is
  left), so the job's children stay on the CPU too.

v1 is what this development host has. Its unified hierarchy has no memory, pids or cpu
controller, so v2's limits, peak and OOM counter follow the kernel's cgroup-v2 documentation
untested; what v2 does without controllers (membership, `cpu.stat`, freeze, `cgroup.kill`,
removal) is tested on the real hierarchy in tests/test_cgroup_v2.py.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from cutor_spool.cpus import parse_cpu_list
from cutor_spool.errors import SandboxError
from cutor_spool.runner.cgroupfs import (
    cgroup_mounts,
    own_cgroup_paths,
    path_under,
    read_control,
    read_keyed,
    write_control,
)

log = logging.getLogger(__name__)

V1_CONTROLLERS = ("memory", "pids", "cpuacct", "freezer")
PARENT = "cutor-spool"


class Cgroup(ABC):
    """One stage's control group."""

    name: str

    @property
    @abstractmethod
    def procs_files(self) -> list[Path]:
        """The files a launcher writes its own pid into (one per v1 hierarchy)."""

    @abstractmethod
    def set_limits(self, *, memory: int, pids: int) -> None: ...

    @abstractmethod
    def set_cpus(self, cpus: str) -> None:
        """Confines the cgroup to `cpus` (a CPU list), before any process joins it."""

    @abstractmethod
    def cpu_seconds(self) -> float: ...

    @abstractmethod
    def memory_peak(self) -> int: ...

    @abstractmethod
    def oom_kills(self) -> int: ...

    @abstractmethod
    def pids(self) -> list[int]: ...

    @abstractmethod
    def _freeze(self, frozen: bool) -> None: ...

    @abstractmethod
    def _dirs(self) -> list[Path]: ...

    def kill(self, timeout: float = 5.0, spare: int | None = None) -> None:
        """Kills every process in the cgroup, including ones forking as fast as they can.

        `spare` is left alive: bwrap's monitor, whose child is the sandbox's pid 1. Killing that
        init tears down the whole pid namespace and the monitor reaps it; killing the monitor as
        well would orphan the init's zombie to the host's pid 1, to be reaped whenever that gets
        round to it, while it still counts against the slot uid's process limit."""
        deadline = time.monotonic() + timeout
        while True:
            members = [p for p in self.pids() if p != spare]
            if not members:
                return
            self._freeze(True)
            try:
                for pid in self.pids():
                    if pid == spare:
                        continue
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            finally:
                self._freeze(False)
            if time.monotonic() > deadline:
                raise SandboxError(f"cgroup {self.name}: processes {members} survive SIGKILL")
            time.sleep(0.001)

    def remove(self) -> None:
        """Kills what is left and removes the cgroup; tolerant of a half-created one."""
        deadline = time.monotonic() + 5.0
        try:
            self.kill()
        except FileNotFoundError:
            pass
        for directory in reversed(self._dirs()):
            while True:
                try:
                    os.rmdir(directory)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise SandboxError(f"cannot remove cgroup {directory}: {exc.strerror}") from exc
                    time.sleep(0.005)  # exiting processes still being reaped by the kernel


@dataclass
class CgroupV1(Cgroup):
    name: str
    dirs: dict[str, Path]
    _paths: dict[tuple[str, str], Path] = field(default_factory=dict, repr=False, compare=False)

    def _file(self, controller: str, name: str) -> Path:
        """A control file's path, made once (read at every wake of the stage's supervisor)."""
        path = self._paths.get((controller, name))
        if path is None:
            path = self._paths[controller, name] = self.dirs[controller] / name
        return path

    @property
    def procs_files(self) -> list[Path]:
        return [d / "cgroup.procs" for d in self.dirs.values()]

    def _dirs(self) -> list[Path]:
        return list(self.dirs.values())

    def set_limits(self, *, memory: int, pids: int) -> None:
        mem = self.dirs["memory"]
        write_control(mem / "memory.limit_in_bytes", str(memory))
        if (mem / "memory.memsw.limit_in_bytes").exists():  # no swapping past the limit either
            write_control(mem / "memory.memsw.limit_in_bytes", str(memory))
        write_control(self.dirs["pids"] / "pids.max", str(pids))

    def set_cpus(self, cpus: str) -> None:
        cpuset = self.dirs["cpuset"]  # v1 starts a cpuset empty: no process may join until both are set
        try:
            write_control(cpuset / "cpuset.cpus", cpus)
        except OSError as exc:  # EINVAL: not the parent's; ERANGE: past the host's last CPU
            if exc.errno in (errno.EINVAL, errno.ERANGE):
                raise _not_granted(cpus, read_control(cpuset.parent / "cpuset.effective_cpus")) from exc
            raise
        write_control(cpuset / "cpuset.mems", read_control(cpuset.parent / "cpuset.mems").strip())

    def cpu_seconds(self) -> float:
        return int(read_control(self._file("cpuacct", "cpuacct.usage"))) / 1e9

    def memory_peak(self) -> int:
        return int(read_control(self._file("memory", "memory.max_usage_in_bytes")))

    def oom_kills(self) -> int:
        return read_keyed(self._file("memory", "memory.oom_control")).get("oom_kill", 0)

    def pids(self) -> list[int]:
        return [int(p) for p in read_control(self._file("pids", "cgroup.procs")).split()]

    def _freeze(self, frozen: bool) -> None:
        state = self.dirs["freezer"] / "freezer.state"
        write_control(state, "FROZEN" if frozen else "THAWED")
        if frozen:
            deadline = time.monotonic() + 1.0
            while read_control(state).strip() != "FROZEN" and time.monotonic() < deadline:
                time.sleep(0.0005)


@dataclass
class CgroupV2(Cgroup):
    name: str
    path: Path

    @property
    def procs_files(self) -> list[Path]:
        return [self.path / "cgroup.procs"]

    def _dirs(self) -> list[Path]:
        return [self.path]

    def set_limits(self, *, memory: int, pids: int) -> None:
        write_control(self.path / "memory.max", str(memory))
        if (self.path / "memory.swap.max").exists():
            write_control(self.path / "memory.swap.max", "0")
        write_control(self.path / "pids.max", str(pids))

    def set_cpus(self, cpus: str) -> None:
        """v2 takes any list, and gives the parent's CPUs when it cannot grant those asked for
        (cgroup-v2.rst, "Cpuset Interface Files"): what the kernel granted is read back."""
        write_control(self.path / "cpuset.cpus", cpus)  # cpuset.mems left empty: the parent's
        granted = read_control(self.path / "cpuset.cpus.effective")
        if parse_cpu_list(granted) != parse_cpu_list(cpus):
            raise _not_granted(cpus, granted)

    def cpu_seconds(self) -> float:
        return read_keyed(self.path / "cpu.stat").get("usage_usec", 0) / 1e6

    def memory_peak(self) -> int:
        peak = self.path / "memory.peak"  # kernel >= 5.19
        return int(read_control(peak if peak.exists() else self.path / "memory.current"))

    def oom_kills(self) -> int:
        return read_keyed(self.path / "memory.events").get("oom_kill", 0)

    def pids(self) -> list[int]:
        return [int(p) for p in read_control(self.path / "cgroup.procs").split()]

    def _freeze(self, frozen: bool) -> None:
        write_control(self.path / "cgroup.freeze", "1" if frozen else "0")

    def kill(self, timeout: float = 5.0, spare: int | None = None) -> None:
        if spare is None and (self.path / "cgroup.kill").exists():  # kernel >= 5.14: atomic, fork-proof
            deadline = time.monotonic() + timeout
            while self.pids():
                write_control(self.path / "cgroup.kill", "1")
                if time.monotonic() > deadline:
                    raise SandboxError(f"cgroup {self.name}: processes survive cgroup.kill")
                time.sleep(0.001)
            return
        super().kill(timeout, spare)


def _not_granted(cpus: str, allowed: str) -> SandboxError:
    """A slot's CPU the kernel refuses: the host's cpuset shrank since the executor started (or a
    CPU went offline). Its stages cannot run pinned; restart the executor to take the new set."""
    return SandboxError(
        f"CPU {cpus} is not among the CPUs stages may use ({allowed.strip() or 'none'}): the host's cpuset changed "
        "since the executor started; restart it"
    )


class CgroupHost:
    """Creates stage cgroups on this host, under the worker's own cgroup; with `cpuset`, in the
    cpuset controller too (CPU pinning), each confined to the CPUs `create` is given."""

    def __init__(
        self, version: int, bases: dict[str, Path], cpuset: bool = False, swept: dict[str, Path] | None = None
    ) -> None:
        self.version = version
        self.bases = bases  # controller -> <own cgroup>/cutor-spool (v2: key "")
        self.cpuset = cpuset
        # where leftovers are looked for: the bases, and on v1 the cpuset hierarchy's even without
        # pinning (a pinned worker that was killed leaves its stage's cgroup there too)
        self.swept = swept if swept is not None else bases

    @classmethod
    def detect(cls, *, cpuset: bool = False) -> CgroupHost:
        mounts, own = cgroup_mounts(), own_cgroup_paths()
        for root, point, fstype, _ in mounts:
            controllers = Path(point, "cgroup.controllers")
            if (
                fstype == "cgroup2"
                and controllers.exists()
                and {"memory", "pids"} <= set(read_control(controllers).split())
            ):
                return cls._setup_v2(path_under(root, point, own.get("", "/")), cpuset)
        bases = {}
        for controller in (*V1_CONTROLLERS, "cpuset"):
            for root, point, fstype, options in mounts:
                if fstype == "cgroup" and controller in options.split(","):
                    bases[controller] = path_under(root, point, own.get(controller, "/")) / PARENT
                    break
            else:
                if controller != "cpuset" or cpuset:
                    raise SandboxError(f"no cgroup v1 '{controller}' hierarchy and no cgroup v2 memory controller")
        swept, bases = bases, {c: b for c, b in bases.items() if c != "cpuset" or cpuset}
        for base in bases.values():
            base.mkdir(exist_ok=True)
        if cpuset:  # the parent's CPUs and memory nodes, every start (they may have changed since)
            for name in ("cpuset.cpus", "cpuset.mems"):
                write_control(bases["cpuset"] / name, read_control(bases["cpuset"].parent / name).strip())
        return cls(1, bases, cpuset, swept)

    @classmethod
    def _setup_v2(cls, own: Path, cpuset: bool = False) -> CgroupHost:
        """v2 forbids processes in a cgroup whose controllers are delegated to children, so the
        worker moves itself into a `supervisor` leaf first (systemd: run it with Delegate=yes)."""
        base = own / PARENT
        wanted = {"memory", "pids", "cpu"} | ({"cpuset"} if cpuset else set())
        enabled = set(read_control(own / "cgroup.subtree_control").split())
        if not wanted <= enabled:
            if read_control(own / "cgroup.procs").split():
                leaf = own / "supervisor"
                leaf.mkdir(exist_ok=True)
                write_control(leaf / "cgroup.procs", "0")
            try:
                write_control(own / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(wanted - enabled)))
            except OSError as exc:
                raise SandboxError(
                    f"cannot enable {sorted(wanted)} in {own}: {exc.strerror}; run the worker in a cgroup "
                    "of its own (systemd: Delegate=yes)"
                ) from exc
        base.mkdir(exist_ok=True)
        write_control(base / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(wanted)))
        return cls(2, {"": base}, cpuset)

    def allowed_cpus(self) -> tuple[int, ...]:
        """The CPUs the cgroup the stages are made under may use (its effective cpuset)."""
        if self.version == 2:
            path = self.bases[""] / "cpuset.cpus.effective"
        else:
            path = self.bases["cpuset"] / "cpuset.effective_cpus"
        return parse_cpu_list(read_control(path))

    def create(self, name: str, cpus: str | None = None) -> Cgroup:
        """A fresh cgroup; pinned to `cpus` when the host was detected with `cpuset` (all the
        allowed CPUs if None: a v1 cpuset must name some)."""
        cgroup: Cgroup
        if self.version == 2:
            cgroup = CgroupV2(name, self.bases[""] / name)
        else:
            cgroup = CgroupV1(name, {c: base / name for c, base in self.bases.items()})
        try:
            for directory in cgroup._dirs():
                os.mkdir(directory)
            if self.cpuset:
                cgroup.set_cpus(cpus if cpus is not None else ",".join(map(str, self.allowed_cpus())))
        except (OSError, SandboxError) as exc:
            try:
                cgroup.remove()
            except SandboxError:
                pass
            if isinstance(exc, SandboxError):
                raise
            raise SandboxError(f"cannot create cgroup {name}: {exc.strerror}") from exc
        return cgroup

    def left_by_dead(self, prefix: str) -> list[Cgroup]:
        """Cgroups named `<prefix><pid>` or `<prefix><pid>-...` whose process `pid` is gone: a
        worker of this host killed before it removed its own."""
        found = []
        for cgroup in self.existing(prefix):
            pid = cgroup.name[len(prefix) :].partition("-")[0]
            if pid.isdigit() and not _alive(int(pid)):
                found.append(cgroup)
        return found

    def existing(self, prefix: str) -> list[Cgroup]:
        """Cgroups left behind (by a worker that was killed) whose name starts with `prefix`, in
        any hierarchy (`remove` passes over those it is not in)."""
        names: set[str] = set()
        for base in self.swept.values():
            try:
                names.update(p.name for p in base.iterdir() if p.is_dir() and p.name.startswith(prefix))
            except FileNotFoundError:
                continue
        if self.version == 2:
            return [CgroupV2(n, self.bases[""] / n) for n in sorted(names)]
        return [CgroupV1(n, {c: base / n for c, base in self.swept.items()}) for n in sorted(names)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
