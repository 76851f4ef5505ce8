"""A container's host cgroup, used stage by stage (PLATFORM-NOTES "Docker").

Docker makes one cgroup per container; every exec of the container lands in it. The supervisor
reads and writes it from the host around each exec:

- before: kill what an earlier stage left, set the memory limit (+ memsw) and `pids.max` for this
  stage, reset the peak (v1 `memory.max_usage_in_bytes`), read `cpuacct.usage` and the OOM-kill
  counter, whose deltas are the stage's CPU time and *memory limit* verdict (`State.OOMKilled`
  never sees an OOM inside an exec);
- on a limit: freeze, SIGKILL every member except the container's init (docker-init) and its
  keeper, thaw: the container lives on for the next stage.

Memory, decided here: files that earlier stages left in /work and /tmp stay charged to the
container (tmpfs pages belong to the cgroup that wrote them), where the bubblewrap backend's fresh
cgroup per stage starts from nothing. So a stage's limit is its own `memory` on top of what cannot
be reclaimed when it starts (those files, the keeper), and the memory it reports is its peak above
the usage it started with. Page cache is left out of that base: the kernel reclaims it before an
OOM. What this allows, and the bubblewrap backend does not: a stage that deletes files left by an
earlier stage may reuse their memory (at most the slot's work_size plus tmp_size).

The v2 paths (`memory.max`, `memory.peak` reset per open file, `memory.events`, `cpu.stat`,
`cgroup.freeze`) follow the kernel's documentation; this host is v1, so they are untested here.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from cutor_spool.errors import SandboxError
from cutor_spool.runner.cgroupfs import cgroup_mounts, path_under, read_control, read_keyed, write_control
from cutor_spool.runner.cgroups import V1_CONTROLLERS, Cgroup, CgroupV1, CgroupV2


@dataclass(frozen=True)
class Process:
    """A pid and its start time: tells a live process from a later one that reused its pid."""

    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> Process | None:
        stat = _stat(pid)
        return None if stat is None else cls(pid, int(stat[19]))

    def alive(self) -> bool:
        stat = _stat(self.pid)
        return stat is not None and int(stat[19]) == self.start and stat[0] != "Z"

    def parent(self) -> int:
        stat = _stat(self.pid)
        return int(stat[1]) if stat is not None else 0


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text[text.rindex(")") + 2 :].split()


def container_init(pid: int) -> Process:
    process = Process.of(pid)
    if process is None:
        raise SandboxError(f"the container's init (pid {pid}) is gone")
    return process


def container_keeper(cgroup: Cgroup, init_pid: int) -> Process:
    """The container's keeper: the child of its init (see launcher.py), once it has started."""
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        for pid in cgroup.pids():
            process = Process.of(pid)
            if pid != init_pid and process is not None and process.parent() == init_pid:
                return process
        time.sleep(0.002)
    raise SandboxError("the container's keeper did not start")


def cgroup_of(pid: int, name: str) -> Cgroup:
    """The host cgroup(s) of a process, from /proc/<pid>/cgroup: v1 where the memory controller is
    a v1 hierarchy (this host), v2 otherwise."""
    paths: dict[str, str] = {}
    with open(f"/proc/{pid}/cgroup", encoding="utf-8") as fh:
        for line in fh:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                paths[controller] = path
    mounts = cgroup_mounts()
    if "memory" in paths:
        dirs = {}
        for controller in V1_CONTROLLERS:
            for root, point, fstype, options in mounts:
                if fstype == "cgroup" and controller in options.split(","):
                    dirs[controller] = path_under(root, point, paths.get(controller, "/"))
                    break
            else:
                raise SandboxError(f"no cgroup v1 '{controller}' hierarchy for container {name}")
        return CgroupV1(name, dirs)
    for root, point, fstype, _ in mounts:
        if fstype == "cgroup2":
            return CgroupV2(name, path_under(root, point, paths.get("", "/")))
    raise SandboxError(f"cannot find the cgroup of container {name}")


@dataclass
class StageStart:
    cpu: float  # the container's CPU counter when the stage started
    oom_kills: int
    usage: int  # memory in use when the stage started (the base of its reported peak)


class ContainerCgroup:
    """One container's cgroup, around each of its stages."""

    def __init__(self, cgroup: Cgroup, spares: tuple[Process, ...]) -> None:
        self.cgroup = cgroup
        self.spares = spares  # docker-init and the keeper
        self._peak_fd: int | None = None  # v2: memory.peak opened and reset for this stage
        self._sampled_peak = 0

    @property
    def name(self) -> str:
        return self.cgroup.name

    def intact(self) -> bool:
        return all(p.alive() for p in self.spares)

    def stage_pids(self) -> list[int]:
        spared = {p.pid for p in self.spares if p.alive()}
        return [pid for pid in self.cgroup.pids() if pid not in spared]

    def kill_stage(self, timeout: float = 5.0) -> None:
        """SIGKILLs every process but the init and the keeper, frozen so that nothing forks
        meanwhile; repeated until none is left."""
        deadline = time.monotonic() + timeout
        while self.stage_pids():
            self.cgroup._freeze(True)
            try:
                for pid in self.stage_pids():
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            finally:
                self.cgroup._freeze(False)
            if time.monotonic() > deadline:
                raise SandboxError(f"container {self.name}: processes {self.stage_pids()} survive SIGKILL")
            time.sleep(0.001)

    # -- per stage ---------------------------------------------------------------------------
    def start_stage(self, *, memory: int, pids: int) -> StageStart:
        self.kill_stage()
        cg = self.cgroup
        if isinstance(cg, CgroupV1):
            mem = cg.dirs["memory"]
            usage = int(read_control(mem / "memory.usage_in_bytes"))
            stat = read_keyed(mem / "memory.stat")
            reclaimable = stat.get("total_active_file", 0) + stat.get("total_inactive_file", 0)
            _set_v1_memory(mem, memory + max(0, usage - reclaimable))
            write_control(cg.dirs["pids"] / "pids.max", str(pids))
            write_control(mem / "memory.max_usage_in_bytes", "0")  # resets the peak to the current usage
        else:
            assert isinstance(cg, CgroupV2)
            usage = int(read_control(cg.path / "memory.current"))
            stat = read_keyed(cg.path / "memory.stat")
            reclaimable = stat.get("active_file", 0) + stat.get("inactive_file", 0)
            write_control(cg.path / "memory.max", str(memory + max(0, usage - reclaimable)))
            if (cg.path / "memory.swap.max").exists():
                write_control(cg.path / "memory.swap.max", "0")
            write_control(cg.path / "pids.max", str(pids))
            self._reset_v2_peak(cg.path)
        self._sampled_peak = usage
        return StageStart(cpu=cg.cpu_seconds(), oom_kills=cg.oom_kills(), usage=usage)

    def _reset_v2_peak(self, path: Path) -> None:
        """Kernel >= 6.12: a write to memory.peak resets the peak seen through that open file."""
        self._close_peak()
        try:
            fd = os.open(path / "memory.peak", os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            return
        try:
            os.write(fd, b"reset\n")
        except OSError:
            os.close(fd)
            return
        self._peak_fd = fd

    def _close_peak(self) -> None:
        if self._peak_fd is not None:
            os.close(self._peak_fd)
            self._peak_fd = None

    def sample(self) -> None:
        """Where the peak cannot be reset (v2 before 6.12), the supervisor's polls sample usage."""
        if isinstance(self.cgroup, CgroupV2) and self._peak_fd is None:
            self._sampled_peak = max(self._sampled_peak, int(read_control(self.cgroup.path / "memory.current")))

    def peak(self) -> int:
        cg = self.cgroup
        if isinstance(cg, CgroupV1):
            return cg.memory_peak()
        if self._peak_fd is not None:
            try:
                return int(os.pread(self._peak_fd, 64, 0))
            finally:
                self._close_peak()
        self.sample()
        return self._sampled_peak


def _set_v1_memory(mem: Path, limit: int) -> None:
    """memsw must stay >= the memory limit at every step: raise it first when going up, lower it
    last when going down. A limit below what cannot be reclaimed fails with EBUSY."""
    memsw = mem / "memory.memsw.limit_in_bytes"
    has_memsw = memsw.exists()
    current = int(read_control(mem / "memory.limit_in_bytes"))
    try:
        if has_memsw and limit > current:
            write_control(memsw, str(limit))
        write_control(mem / "memory.limit_in_bytes", str(limit))
        if has_memsw:
            write_control(memsw, str(limit))
    except OSError as exc:
        raise SandboxError(f"cannot set the memory limit of {mem.name[:12]} to {limit}: {exc.strerror}") from exc
