"""The cgroup v2 code on the real unified hierarchy, as far as this host allows.

This host is cgroup v1 hybrid: its unified hierarchy (mounted at /sys/fs/cgroup/unified) has no
memory, pids or cpu controller, so `memory.max`, `pids.max`, `memory.peak` and `memory.events`
cannot be exercised here. What v2 gives without any controller is exercised for real: membership
(`cgroup.procs`), CPU time of every member summed (`cpu.stat`), freezing (`cgroup.freeze`),
killing everything with `cgroup.kill` (setsid escapees included), the freeze-kill-thaw path used
when one process is spared, and removal.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import need

from cutor_spool.runner.cgroupfs import cgroup_mounts, own_cgroup_paths, read_keyed
from cutor_spool.runner.cgroups import CgroupV2

# Reads its stdin before it starts, so that the test can move it into the cgroup first; then
# starts a busy child that escapes into its own session, and busies itself.
BUSY = "read go; (setsid sh -c 'while :; do :; done' &); while :; do :; done"


def unified_root() -> Path | None:
    for _, point, fstype, _ in cgroup_mounts():
        if fstype == "cgroup2":
            return Path(point)
    return None


@pytest.fixture
def cgroup() -> Iterator[CgroupV2]:
    root = unified_root()
    need(root is not None and os.geteuid() == 0, "a cgroup2 mount, as root")
    assert root is not None
    need((root / "cgroup.procs").exists(), "the unified hierarchy")
    path = root / own_cgroup_paths()[""].lstrip("/") / f"cutor-spool-v2test-{os.getpid()}"
    path.mkdir()
    group = CgroupV2(path.name, path)
    try:
        yield group
    finally:
        group.remove()


def busy_in(group: CgroupV2) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["sh", "-c", BUSY], stdin=subprocess.PIPE)
    (group.path / "cgroup.procs").write_text(str(proc.pid))
    assert proc.stdin is not None
    proc.stdin.write(b"go\n")
    proc.stdin.close()
    deadline = time.monotonic() + 10
    while not any(escaped(pid, proc.pid) for pid in group.pids()):  # the setsid child has started
        assert time.monotonic() < deadline, f"members: {group.pids()}"
        time.sleep(0.01)
    return proc


def escaped(pid: int, parent: int) -> bool:
    try:
        return pid != parent and os.getsid(pid) != os.getsid(parent)
    except ProcessLookupError:
        return False


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_members_cpu_and_cgroup_kill(cgroup: CgroupV2) -> None:
    need((cgroup.path / "cgroup.kill").exists(), "cgroup.kill (kernel >= 5.14)")
    proc = busy_in(cgroup)
    members = cgroup.pids()
    assert proc.pid in members and len(members) >= 2, "the escapee is still a member"
    time.sleep(1.0)
    each = [process_cpu(pid) for pid in members]
    cpu = cgroup.cpu_seconds()
    assert min(each) > 0.1, f"both busy: {each}"
    assert sum(each) * 0.95 <= cpu <= 2.5, f"the cgroup's CPU {cpu:.3f} s sums its members' {each}"
    cgroup.kill()
    proc.wait(5)
    assert cgroup.pids() == []
    assert not any(alive(pid) for pid in members), "the setsid escapee outlived cgroup.kill"


def test_freeze_stops_every_member_and_the_spared_path_kills_the_rest(cgroup: CgroupV2) -> None:
    proc = busy_in(cgroup)
    cgroup._freeze(True)
    deadline = time.monotonic() + 5
    while read_keyed(cgroup.path / "cgroup.events").get("frozen") != 1:
        assert time.monotonic() < deadline, "never frozen"
        time.sleep(0.01)
    before = cgroup.cpu_seconds()
    time.sleep(0.3)
    assert cgroup.cpu_seconds() - before < 0.01, "a frozen cgroup used CPU"
    cgroup._freeze(False)
    time.sleep(0.2)
    assert cgroup.cpu_seconds() - before > 0.1, "thawed, it runs again"
    members = cgroup.pids()
    cgroup.kill(spare=proc.pid)  # the freeze, SIGKILL, thaw path (bwrap's monitor is spared)
    assert cgroup.pids() == [proc.pid] and alive(proc.pid)
    escapees = [pid for pid in members if pid != proc.pid]
    assert escapees and not any(alive(pid) for pid in escapees)
    proc.kill()
    proc.wait(5)


def test_remove_leaves_nothing(cgroup: CgroupV2) -> None:
    proc = busy_in(cgroup)
    members = cgroup.pids()
    cgroup.remove()
    proc.wait(5)
    assert not cgroup.path.exists()
    assert not any(alive(pid) for pid in members)
    cgroup.path.mkdir()  # for the fixture's own removal
