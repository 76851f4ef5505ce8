"""CPU pinning (spool.yaml `sandbox.pinning`): each slot's stages on one CPU of their own, in a
cpuset its processes cannot leave; the CPU named in status.json and the heartbeat; off by default.

Real bubblewrap stages in real cgroups (v1 cpuset here), real executor processes. The slot uids are
61200 onwards, a range of their own, so that a sandbox suite running at the same time on this host
does not take our slots (the slot locks are host-wide)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import drop, make_submission, need, result, stage, wait_done, wait_until, write_config

from cutor_spool.config import PinningConfig, SpoolConfig, load_config
from cutor_spool.cpus import format_cpu_list, parse_cpu_list, thread_siblings
from cutor_spool.errors import ConfigError, SandboxError
from cutor_spool.limits import Limits
from cutor_spool.runner.bwrap import BubblewrapBackend
from cutor_spool.runner.cgroupfs import cgroup_mounts
from cutor_spool.runner.cgroups import CgroupV2
from cutor_spool.runner.sandbox import PIPE
from cutor_spool.runner.slots import DEFAULT_STATE_DIR, SlotPool, pinned_cpus
from cutor_spool.runner.stage import StageSpec, StageStatus

UID_BASE = 61200
SLOTS = 8
LIMITS = Limits(
    cpu_time=5, wall_time=20, memory=256 << 20, processes=32, file_size=1 << 20, open_files=64, stack=8 << 20,
    output=1 << 20,
)  # fmt: skip
CPUS = tuple(sorted(os.sched_getaffinity(0)))
ALLOWED = "grep Cpus_allowed_list /proc/self/status | cut -f2"

needs_two = pytest.mark.skipif(len(CPUS) < 2, reason="pinning two slots apart needs two CPUs")


@pytest.fixture(scope="module")
def backend() -> BubblewrapBackend:
    return BubblewrapBackend(state_dir=DEFAULT_STATE_DIR, uid_base=UID_BASE, slots=SLOTS, tmp_size=16 << 20, pin=True)


@pytest.fixture
def pool(backend: BubblewrapBackend) -> SlotPool:
    return SlotPool(uid_base=UID_BASE, count=SLOTS, work_size=32 << 20, cpus=backend.cpus())


def sh(script: str) -> StageSpec:
    return StageSpec(name="run", command=("sh", "-c", script), limits=LIMITS)


def lines(data: bytes) -> list[str]:
    return data.decode().split()


# -- spool.yaml ----------------------------------------------------------------------------------


def test_pinning_is_off_by_default_and_takes_both_list_forms(tmp_path: Path) -> None:
    assert SpoolConfig().sandbox.pinning == PinningConfig(enabled=False, cpus=None)
    for given, cpus in (('"0-2,5"', (0, 1, 2, 5)), ("[3, 1, 1]", (1, 3)), ('"7"', (7,))):
        (tmp_path / "spool.yaml").write_text(f"sandbox:\n  pinning:\n    enabled: true\n    cpus: {given}\n")
        assert load_config(tmp_path).sandbox.pinning == PinningConfig(enabled=True, cpus=cpus), given
    assert format_cpu_list(parse_cpu_list("0-2,5")) == "0-2,5"


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("{first: 0}", "is not a CPU list"),
        ("2-1", "goes backwards"),
        ("0-x", "is not a CPU or a range"),
        ("[-1]", "CPU -1 is out of range"),
        ("[0, 100000]", "CPU 100000 is out of range"),
        ("[0, one]", "'one' is not a CPU number"),
        ("[]", "an empty CPU list"),
    ],
)
def test_a_bad_cpu_list_is_a_clear_error(tmp_path: Path, given: str, says: str) -> None:
    (tmp_path / "spool.yaml").write_text(f"sandbox:\n  pinning:\n    enabled: true\n    cpus: {given}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert "sandbox.pinning.cpus" in str(caught.value) and says in str(caught.value), caught.value


def test_cpus_this_host_lacks_are_refused_or_left_out() -> None:
    pinning = PinningConfig(enabled=True, cpus=(5, 9))
    with pytest.raises(ConfigError, match=r"none of 5,9 is a CPU this executor may use \(it may use 0-1\)"):
        pinned_cpus(pinning, (0, 1))
    assert pinned_cpus(PinningConfig(enabled=True, cpus=(1, 5)), (0, 1)) == (1,)
    assert pinned_cpus(PinningConfig(enabled=True), (0, 1)) == (0, 1)
    assert pinned_cpus(PinningConfig(enabled=False, cpus=(1,)), (0, 1)) == ()


# -- stages ----------------------------------------------------------------------------------------


def test_a_pinned_stage_sees_only_its_slot_s_cpu(backend: BubblewrapBackend, pool: SlotPool) -> None:
    slot = pool.acquire()
    cpu = slot.cpu
    try:
        assert cpu in CPUS
        out = backend.open(slot, "pinned").run(sh(f"{ALLOWED}; nproc"))
    finally:
        pool.release(slot)
    assert out.status == StageStatus.OK, out
    assert lines(out.stdout) == [str(cpu), "1"]


@needs_two
def test_a_child_cannot_move_to_another_cpu(backend: BubblewrapBackend, pool: SlotPool) -> None:
    slot = pool.acquire()
    cpu = slot.cpu
    try:
        assert cpu is not None
        other = next(c for c in CPUS if c != cpu)
        script = (
            f"taskset -p -c {other} $$ >/dev/null 2>&1 && echo moved || echo refused; "  # the cpuset has no other CPU
            f"taskset -c {format_cpu_list(CPUS)} sh -c '{ALLOWED}'; "  # asking for all: still only its own
            "python3 -c 'import os; os.sched_setaffinity(0, range(os.cpu_count())); print(*os.sched_getaffinity(0))'"
        )
        out = backend.open(slot, "escape").run(sh(script))
    finally:
        pool.release(slot)
    assert out.status == StageStatus.OK, out
    assert lines(out.stdout) == ["refused", str(cpu), str(cpu)]


@needs_two
def test_two_slots_at_once_run_on_different_cpus(backend: BubblewrapBackend, pool: SlotPool) -> None:
    slots = [pool.acquire(), pool.acquire()]
    seen: dict[int, bytes] = {}
    try:
        assert len({s.cpu for s in slots}) == 2 and {s.cpu for s in slots} <= set(CPUS)  # two cores, if it has them
        # At the same time: the first cannot end before the test writes to its stdin, which it
        # does once the second has ended.
        first = backend.open(slots[0], "a").spawn(sh(f"{ALLOWED}; read go"), stdin=PIPE, stdout=None)
        second = backend.open(slots[1], "b").run(sh(ALLOWED))
        assert first.stdin is not None
        os.write(first.stdin, b"go\n")
        os.close(first.stdin)
        seen = {slots[0].uid: first.wait().stdout, slots[1].uid: second.stdout}
        cpus = {s.uid: s.cpu for s in slots}
    finally:
        for slot in slots:
            pool.release(slot)
    assert {uid: lines(out) for uid, out in seen.items()} == {uid: [str(cpu)] for uid, cpu in cpus.items()}
    assert pool.holders() == dict.fromkeys(CPUS, 0)


def test_more_slots_than_cpus_share_the_least_used() -> None:
    # At most three of the host's CPUs (so that twice as many slots and one more fit in SLOTS), each
    # a core of its own (as here), whatever the host: the rule for siblings is tested below.
    cpus = CPUS[:3]
    alone = {cpu: frozenset({cpu}) for cpu in cpus}
    pool = SlotPool(uid_base=UID_BASE, count=SLOTS, work_size=32 << 20, cpus=cpus, siblings=alone)
    slots = [pool.acquire() for _ in range(2 * len(cpus) + 1)]
    try:
        counts = pool.holders()
        assert sorted(counts) == list(cpus) and max(counts.values()) - min(counts.values()) <= 1, counts
        pool.release(slots.pop(0))  # a CPU freed is the next one given
        freed = min(pool.holders(), key=lambda c: (pool.holders()[c], c))
        slots.append(pool.acquire())
        assert slots[-1].cpu == freed
    finally:
        for slot in slots:
            pool.release(slot)


@needs_two
def test_two_executors_pools_on_one_host_spread_their_slots_over_the_cpus() -> None:
    """Two pools stand for two executors of one host: each sees the other's slots, so their
    first slots go to different CPUs (they used to both take the lowest)."""
    cpus = CPUS[:2]
    alone = {cpu: frozenset({cpu}) for cpu in cpus}
    first, second = (
        SlotPool(uid_base=UID_BASE, count=SLOTS, work_size=32 << 20, cpus=cpus, siblings=alone) for _ in "12"
    )
    slots = [first.acquire(), second.acquire()]
    try:
        assert {s.cpu for s in slots} == set(cpus)
        assert first.holders() == second.holders() == dict.fromkeys(cpus, 1)
        slots.append(second.acquire())
        assert second.holders()[slots[-1].cpu] == 2
    finally:
        for slot, pool in zip(slots, (first, second, second), strict=True):
            pool.release(slot)
    assert first.holders() == dict.fromkeys(cpus, 0)


KEEPS_A_SLOT = """
import sys
from cutor_spool.runner.slots import SlotPool
pool = SlotPool(uid_base=int(sys.argv[1]), count=int(sys.argv[2]), work_size=32 << 20, cpus=(int(sys.argv[3]),))
print(pool.acquire().cpu, flush=True)
sys.stdin.read()
"""


def test_a_killed_executors_cpu_seat_is_free_again() -> None:
    cpu = CPUS[0]
    pool = SlotPool(uid_base=UID_BASE, count=SLOTS, work_size=32 << 20, cpus=(cpu,))
    holder = subprocess.Popen(
        [sys.executable, "-c", KEEPS_A_SLOT, str(UID_BASE), str(SLOTS), str(cpu)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == str(cpu)
        assert pool.holders() == {cpu: 1}
    finally:
        holder.kill()
        holder.wait()
    assert pool.holders() == {cpu: 0}  # the kernel dropped its seat with its descriptors
    slot = pool.acquire()
    try:
        assert slot.cpu == cpu and pool.holders() == {cpu: 1}
    finally:
        pool.release(slot)


def test_without_pinning_a_stage_sees_every_cpu_and_no_cpuset() -> None:
    backend = BubblewrapBackend(state_dir=DEFAULT_STATE_DIR, uid_base=UID_BASE, slots=SLOTS, tmp_size=16 << 20)
    pool = SlotPool(uid_base=UID_BASE, count=SLOTS, work_size=32 << 20)
    slot = pool.acquire()
    try:
        assert slot.cpu is None
        out = backend.open(slot, "free").run(sh(ALLOWED))
    finally:
        pool.release(slot)
    assert lines(out.stdout) == [format_cpu_list(CPUS)]
    assert not backend.cgroups.cpuset and "cpuset" not in backend.cgroups.bases


def test_a_slot_gets_an_idle_core_before_the_hyperthread_of_a_busy_one() -> None:
    # A hyperthreaded host is not at hand (this one has a thread per core): its topology is
    # given, numbered as on hosts whose siblings are adjacent (0-1 one core, 2-3 the other).
    pool = SlotPool(
        uid_base=UID_BASE, count=SLOTS, work_size=32 << 20, cpus=(0, 1, 2, 3),
        siblings={0: frozenset({0, 1}), 1: frozenset({0, 1}), 2: frozenset({2, 3}), 3: frozenset({2, 3})},
    )  # fmt: skip
    slots = [pool.acquire() for _ in range(5)]
    try:
        assert [s.cpu for s in slots] == [0, 2, 1, 3, 0]
        pool.release(slots.pop(1))  # core 2-3 now has one busy thread, core 0-1 three
        slots.append(pool.acquire())
        assert slots[-1].cpu == 2
    finally:
        for slot in slots:
            pool.release(slot)


def test_the_host_s_hyperthread_siblings_are_those_of_one_core() -> None:
    cores: dict[str, set[int]] = {}
    listing = subprocess.run(["lscpu", "--parse=CPU,CORE,SOCKET"], capture_output=True, text=True, check=True)
    for line in listing.stdout.splitlines():
        if not line.startswith("#"):
            cpu, core, socket = line.split(",")
            cores.setdefault(f"{socket}/{core}", set()).add(int(cpu))
    expected = {cpu: frozenset(same) for same in cores.values() for cpu in same if cpu in CPUS}
    assert thread_siblings(CPUS) == expected
    assert thread_siblings((MAX_ABSENT := 8000,)) == {MAX_ABSENT: frozenset({MAX_ABSENT})}  # no such CPU: its own


def test_a_cpu_outside_the_stages_cpuset_is_refused_and_leaves_no_cgroup(backend: BubblewrapBackend) -> None:
    absent = max(backend.cgroups.allowed_cpus()) + 1
    says = rf"CPU {absent} is not among the CPUs stages may use \({format_cpu_list(CPUS)}\)"
    with pytest.raises(SandboxError, match=says):
        backend.cgroups.create("pintest-absent", str(absent))
    assert not [b / "pintest-absent" for b in backend.cgroups.bases.values() if (b / "pintest-absent").exists()]


def test_a_pinned_stage_s_cgroup_left_by_a_killed_worker_is_swept_with_pinning_off(backend: BubblewrapBackend) -> None:
    # What a pinned executor killed mid-stage leaves: the stage's cgroup in every hierarchy, the
    # cpuset one included. The next executor on the host may run without pinning.
    pool = SlotPool(uid_base=UID_BASE, count=SLOTS, work_size=32 << 20)
    slot = pool.acquire()
    try:
        left = backend.cgroups.create(f"{slot.name}-deadbeef", str(CPUS[0]))
        cpuset = backend.cgroups.bases["cpuset"] / left.name
        assert cpuset.is_dir()
        unpinned = BubblewrapBackend(state_dir=DEFAULT_STATE_DIR, uid_base=UID_BASE, slots=SLOTS, tmp_size=16 << 20)
        unpinned.open(slot, "after").close()
    finally:
        pool.release(slot)
    assert not cpuset.exists()
    assert not [b / left.name for b in backend.cgroups.bases.values() if (b / left.name).exists()]


def test_on_cgroup_v2_a_cpu_the_kernel_does_not_grant_is_refused(tmp_path: Path) -> None:
    # v2 takes any CPU list into cpuset.cpus and silently gives the parent's CPUs when none of
    # them is granted. This host's unified hierarchy has no cpuset controller (v1 holds it), so
    # the kernel's answer is written by hand: a directory standing in for the cgroup.
    group = CgroupV2("pintest", tmp_path)
    (tmp_path / "cpuset.cpus.effective").write_text("0-1\n")
    with pytest.raises(SandboxError, match=r"CPU 5 is not among the CPUs stages may use \(0-1\)"):
        group.set_cpus("5")
    (tmp_path / "cpuset.cpus.effective").write_text("1\n")
    group.set_cpus("1")
    assert (tmp_path / "cpuset.cpus").read_text() == "1"


RESTRICTED = """
import json, os, sys
from pathlib import Path
from cutor_spool.config import PinningConfig
from cutor_spool.runner.bwrap import BubblewrapBackend
from cutor_spool.runner.slots import DEFAULT_STATE_DIR, SlotPool, pinned_cpus
from test_pinning import ALLOWED, SLOTS, UID_BASE, sh
backend = BubblewrapBackend(state_dir=DEFAULT_STATE_DIR, uid_base=UID_BASE, slots=SLOTS, tmp_size=16 << 20, pin=True)
cpus = pinned_cpus(PinningConfig(enabled=True), backend.cpus())
pool = SlotPool(uid_base=UID_BASE, count=SLOTS, work_size=32 << 20, cpus=cpus)
slot = pool.acquire()
cpu = slot.cpu
try:
    out = backend.open(slot, "restricted").run(sh(ALLOWED))
finally:
    pool.release(slot)
print(json.dumps({"cpus": cpus, "slot": cpu, "stage": out.stdout.decode().strip()}))
"""


@pytest.fixture
def restricted_cpuset() -> Iterator[tuple[Path, int]]:
    """A v1 cpuset cgroup holding only this host's last CPU."""
    points = [
        Path(p) for _, p, fstype, options in cgroup_mounts() if fstype == "cgroup" and "cpuset" in options.split(",")
    ]
    need(bool(points) and len(CPUS) >= 2, "a cgroup v1 cpuset hierarchy and two CPUs")
    path = points[0] / f"cutor-pintest-{os.getpid()}"
    path.mkdir()
    try:
        (path / "cpuset.cpus").write_text(str(CPUS[-1]))
        (path / "cpuset.mems").write_text((points[0] / "cpuset.mems").read_text().strip())
        yield path, CPUS[-1]
    finally:
        for leftover in sorted(path.rglob("*"), key=lambda p: -len(p.parts)):
            if leftover.is_dir():
                leftover.rmdir()
        path.rmdir()


def test_in_a_restricted_cpuset_slots_are_pinned_only_to_its_cpus(restricted_cpuset: tuple[Path, int]) -> None:
    path, cpu = restricted_cpuset
    # The child moves itself into the cpuset before it imports anything (its affinity follows).
    script = f"import os; open('{path}/cgroup.procs', 'w').write(str(os.getpid()))\n" + RESTRICTED
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent), str(Path(__file__).parent)])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"cpus": [cpu], "slot": cpu, "stage": str(cpu)}


# -- the executor ----------------------------------------------------------------------------------


def heartbeat(spool: Path) -> dict[str, Any] | None:
    for path in (spool / "workers").glob("*.json"):
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError):
            return None  # being replaced: the next poll reads it
    return None


def two_running(spool: Path) -> list[dict[str, Any]] | None:
    beat = heartbeat(spool)
    current = [c for c in (beat or {}).get("current", []) if c.get("cpu") is not None]
    return current if len(current) == 2 else None


@needs_two
@pytest.mark.slow
def test_an_executor_pins_two_submissions_apart_and_says_where(spool: Path, tmp_path: Path, executors: Any) -> None:
    write_config(spool, sandbox={"uid_base": UID_BASE, "slots": SLOTS, "pinning": {"enabled": True}})
    # Each runs until the test has seen both in the heartbeat (a file the test writes in /work is
    # out of reach; a long enough sleep is what the stage does, the test waits on the heartbeat).
    job = {"run": f"{ALLOWED}; sleep 4"}
    for name in ("a", "b"):
        drop(spool, make_submission(tmp_path, name, job), name)
    executors(spool, "--concurrency", "2")
    running = wait_until(lambda: two_running(spool), 30, "both submissions running, each with its CPU")
    beat = heartbeat(spool)
    assert beat is not None and beat["cpus"] == list(CPUS)
    assert len({c["cpu"] for c in running}) == 2 and {c["cpu"] for c in running} <= set(CPUS)
    wait_done(spool, ["a", "b"])
    for name in ("a", "b"):
        status = result(spool, name)
        assert status["outcome"] == "ok", status
        assert lines(stage(spool, name, "run")["stdout"].encode()) == [str(status["sandbox_cpu"])]
        assert {c["id"]: c["cpu"] for c in running}[name] == status["sandbox_cpu"]
    assert len({result(spool, n)["sandbox_cpu"] for n in ("a", "b")}) == 2


INTERACTOR = (Path(__file__).parent.parent / "examples" / "interactive" / "interactor.py").read_text()


@needs_two
@pytest.mark.slow
def test_an_interactors_slot_is_pinned_too_and_shown_in_the_heartbeat_and_status(
    spool: Path, tmp_path: Path, executors: Any
) -> None:
    """The interactor runs in a second slot: its CPU is in the heartbeat's `helper_cpus` while it
    runs, and both slots are in status.json, on two CPUs (an idle core before a busy one's)."""
    write_config(spool, sandbox={"uid_base": UID_BASE, "slots": SLOTS, "pinning": {"enabled": True}})
    job = {
        "grader": "interactive",
        "run": "read n; timeout 3 sh -c 'while :; do :; done'; echo '! 7'",  # busy: no idleness limit
        "checker": {"type": "program", "files": ["interactor.py"], "run": 'python3 interactor.py "$@"'},
        "tests": [{"name": "t", "input": "10 7 4"}],
    }
    drop(spool, make_submission(tmp_path, "game", job, {"interactor.py": INTERACTOR}), "game")
    executors(spool)

    def helper_running() -> dict[str, Any] | None:
        current = (heartbeat(spool) or {}).get("current", [])
        return next((c for c in current if c.get("helper_cpus")), None)

    running = wait_until(helper_running, 30, "the interactor's CPU in the heartbeat")
    wait_done(spool, "game")
    status = result(spool, "game")
    assert (status["state"], status["outcome"]) == ("done", "accepted"), status
    interactor = status["helper_sandboxes"]["interactor"]
    assert running["helper_cpus"] == [interactor["cpu"]] and running["cpu"] == status["sandbox_cpu"]
    assert interactor["cpu"] != status["sandbox_cpu"] and interactor["uid"] != status["sandbox_uid"]
    wait_until(lambda: not (heartbeat(spool) or {"current": [1]}).get("current"), 30, "the heartbeat with nothing held")


@pytest.mark.slow
def test_an_executor_with_pinning_off_runs_stages_on_every_cpu(spool: Path, tmp_path: Path, executors: Any) -> None:
    write_config(spool, sandbox={"uid_base": UID_BASE, "slots": SLOTS, "pinning": {"enabled": False}})
    drop(spool, make_submission(tmp_path, "free", {"run": ALLOWED}), "free")
    executors(spool)
    wait_done(spool, "free")
    status = result(spool, "free")
    assert status["outcome"] == "ok" and "sandbox_cpu" not in status, status
    assert lines(stage(spool, "free", "run")["stdout"].encode()) == [format_cpu_list(CPUS)]


def test_an_executor_refuses_to_start_pinned_to_cpus_it_does_not_have(spool: Path, executors: Any) -> None:
    absent = max(CPUS) + 64
    write_config(spool, sandbox={"uid_base": UID_BASE, "slots": SLOTS, "pinning": {"enabled": True, "cpus": [absent]}})
    proc = executors(spool)
    assert proc.proc is not None
    code = proc.proc.wait(60)
    assert code != 0
    assert f"sandbox.pinning.cpus: none of {absent} is a CPU this executor may use" in proc.output()
