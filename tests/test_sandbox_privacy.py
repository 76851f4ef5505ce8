"""What a running job keeps to itself, and what the sandbox shows it of the host (issue 12: a
spool that users who do not trust each other can share). On both backends, through a real
executor:

- a running job's work area, stdin and stage files cannot be listed or read by another local user
  (uid 65534) by their predictable host paths under the state directory;
- /proc/self/mountinfo inside a stage names no host path of the state directory or the spool, and
  no submission id;
- arguments and environment too big for the kernel's exec end `invalid` at once, with the reason,
  not as a sandbox failure retried into `error`; just under the limit still runs;
- reusing slots under concurrency logs no "leftover processes" for well-behaved jobs, and a job
  that leaves a real survivor still has it killed and logged.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import CLI, ExecutorProcess, drop, make_submission, need, result, wait_done, wait_until, write_config
from docker_image.fixtures import IMAGE, start_engine_and_build

from cutor_spool.limits import Limits
from cutor_spool.runner.execsize import SANDBOX_MARGIN, exec_room, exec_size, own_stack
from cutor_spool.runner.slots import LOCK_DIR, ProcessInfo, SlotPool, processes_of

OTHER_USER = 65534
LIMITS = Limits(
    cpu_time=5,
    wall_time=60,
    memory=256 << 20,
    processes=32,
    file_size=1 << 20,
    open_files=64,
    stack=8 << 20,
    output=1 << 20,
)
BACKENDS = ["bubblewrap", pytest.param("docker", marks=pytest.mark.slow)]
# The job of the privacy tests: leaves a marker in /work and waits for the host to let it go.
WAITER = "echo private > /work/marker-$1 && while [ ! -e /work/go ]; do sleep 0.02; done; echo released"

PEEK = """
import os, sys
for path in sys.argv[1:]:
    try:
        if os.path.isdir(path):
            print('listed', path, os.listdir(path))
        else:
            print('read', path, open(path, 'rb').read(64))
    except OSError as exc:
        print('refused', path, type(exc).__name__)
"""


@dataclass
class Host:
    backend: str
    spool: Path
    state: Path
    executor: ExecutorProcess


@pytest.fixture(params=BACKENDS)
def host(request: pytest.FixtureRequest, run_dir: Path, tmp_path: Path) -> Iterator[Host]:
    backend = request.param
    if backend == "docker":
        need((problem := start_engine_and_build()) is None, problem or "")
    spool = run_dir / "spool"
    subprocess.run([*CLI, "--spool", str(spool), "init"], check=True, capture_output=True)
    write_config(spool, backend=backend, docker={"image": IMAGE}, max_attempts=3)
    state = run_dir / "state"
    executor = ExecutorProcess(
        spool, ["executor", "--state-dir", str(state), "--concurrency", "2"], tmp_path / "executor.log"
    )
    yield Host(backend, spool, state, executor)
    executor.stop()


def as_other_user(*paths: Path) -> str:
    done = subprocess.run(
        ["/usr/bin/python3", "-c", PEEK, *map(str, paths)],
        user=OTHER_USER,
        group=OTHER_USER,
        extra_groups=[],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout


def test_another_local_user_cannot_see_a_running_jobs_files(host: Host, tmp_path: Path) -> None:
    sub = {"run": WAITER, "args": ["a"], "stdin": "the job's stdin\n", "files": [{"name": "x", "content": "1"}]}
    drop(host.spool, make_submission(tmp_path, "private", sub), "private")
    marker = wait_until(lambda: list((host.state / "slots").glob("*/work/marker-a")), 60, "the job never started")[0]
    slot = marker.parent.parent
    assert marker.read_text() == "private\n"  # root (the executor) sees it
    seen = as_other_user(
        slot, slot / "work", marker, slot / "io", slot / "io" / "script", slot / "stdin", host.state / "slots"
    )
    for path in (slot, slot / "work", marker, slot / "io", slot / "io" / "script", slot / "stdin"):
        assert f"refused {path} PermissionError" in seen, seen
    (slot / "work" / "go").write_text("")
    wait_done(host.spool, "private")
    assert result(host.spool, "private")["outcome"] == "ok"
    run = json.loads((host.spool / "done" / "private" / "result" / "run.json").read_text())
    assert run["stdout"] == "released\n"


def test_mountinfo_names_no_host_path_of_the_spool_or_state_directory(host: Host, tmp_path: Path) -> None:
    sub = {"compile": "cat /proc/self/mountinfo > mounts", "run": "cat mounts; echo; cat /proc/self/mountinfo"}
    drop(host.spool, make_submission(tmp_path, "mounts-of-entry-7", sub), "mounts-of-entry-7")
    wait_done(host.spool, "mounts-of-entry-7")
    run = json.loads((host.spool / "done" / "mounts-of-entry-7" / "result" / "run.json").read_text())
    mountinfo = run["stdout"]
    assert " /work " in mountinfo and " /run/cutor " in mountinfo, mountinfo
    for revealing in (str(host.state), str(host.spool), str(host.spool.parent), "mounts-of-entry-7"):
        assert revealing not in mountinfo, f"{revealing} in the job's mountinfo:\n{mountinfo}"


def sized_env(total: int, args: list[str]) -> dict[str, str]:
    """An `env` that, with `args`, takes exactly `total` bytes at the sandbox's exec."""
    env: dict[str, str] = {}
    n = 0
    while exec_size(args, env) < total:
        left = total - exec_size(args, env) - exec_size([], {f"V{n}": ""})
        env[f"V{n}"] = "v" * min(60_000, left)
        n += 1
    assert exec_size(args, env) == total
    return env


def test_args_and_env_too_big_for_exec_are_invalid_at_once_and_just_under_runs(host: Host, tmp_path: Path) -> None:
    run_stack = 64 << 20  # FAST_CONFIG keeps the default stage stack limit
    allowed = min(exec_room(run_stack), exec_room(own_stack())) - SANDBOX_MARGIN
    args = ["a" * 60_000, "b" * 60_000]
    fits = sized_env(allowed, args)
    over = sized_env(allowed + 1, args)
    script = 'echo "$# ${#1} ${#V0}"'
    drop(host.spool, make_submission(tmp_path, "fits", {"run": script, "args": args, "env": fits}), "fits")
    drop(host.spool, make_submission(tmp_path, "over", {"run": script, "args": args, "env": over}), "over")
    # The issue's own case: 40 arguments and 40 variables of 65,000 bytes.
    huge = {"run": "true", "args": ["x" * 65_000] * 40, "env": {f"E{i}": "y" * 65_000 for i in range(40)}}
    drop(host.spool, make_submission(tmp_path, "huge", huge), "huge")
    wait_done(host.spool, ["fits", "over", "huge"], timeout=120)
    for name in ("over", "huge"):
        status = result(host.spool, name)
        assert status["state"] == "invalid", status
        assert status.get("attempts") in (None, 1), status
        [problem] = [e for e in status["errors"] if e["where"] == "args and env"]
        assert status["errors"] == [problem], status["errors"]
        assert problem["where"] == "args and env" and "the run stage's args and env take" in problem["message"]
        assert f"at most {allowed:,} fit" in problem["message"], problem
    assert "sandbox failure" not in host.executor.output()
    status = result(host.spool, "fits")
    assert status["outcome"] == "ok", status
    run = json.loads((host.spool / "done" / "fits" / "result" / "run.json").read_text())
    assert run["stdout"] == f"2 60000 {len(fits['V0'])}\n"


def test_a_single_string_over_the_kernels_limit_is_invalid(tmp_path: Path) -> None:
    directory = make_submission(tmp_path, "wide", {"run": "true", "env": {"WIDE": "\U0001f600" * 40_000}})
    done = subprocess.run([*CLI, "validate", "--json", str(directory)], capture_output=True, text=True)
    assert done.returncode == 3, done.stderr
    [problem] = json.loads(done.stdout)["errors"]
    assert problem["where"] == "env.WIDE" and "160,006 bytes" in problem["message"], problem


def test_slots_reused_under_concurrency_log_no_leftovers_but_a_real_survivor_is_killed(
    run_dir: Path, tmp_path: Path
) -> None:
    uid_base = 61950
    spool = run_dir / "spool"
    subprocess.run([*CLI, "--spool", str(spool), "init"], check=True, capture_output=True)
    write_config(spool, sandbox={"uid_base": uid_base, "slots": 2})
    # What a worker killed mid-stage would leave: a process of the slot's uid outside any stage,
    # and the slot's lock file still saying "in use". Started from here because a job cannot
    # leave one (its cgroup is killed after every stage).
    (LOCK_DIR / f"uid-{uid_base}.lock").write_bytes(b"u")
    survivor = subprocess.Popen(["/bin/sleep", "300"], user=uid_base, group=uid_base, extra_groups=[])
    reaped = threading.Thread(target=survivor.wait)  # reaped at once: a zombie of ours would hold the slot
    reaped.start()
    kinds = [
        {"run": "echo hi"},
        {"run": "sleep 60 & echo background"},
        {"run": "cat", "tests": [{"input": "1\n", "output": "1\n"}, {"input": "2\n", "output": "2\n"}]},
        {"run": "sleep 10", "limits": {"run": {"wall_time": "0.2s"}}},
    ]
    ids = [f"job-{n}" for n in range(40)]
    for n, entry_id in enumerate(ids):
        drop(spool, make_submission(tmp_path / "src", entry_id, kinds[n % len(kinds)]), entry_id)
    executor = ExecutorProcess(
        spool, ["executor", "--state-dir", str(run_dir / "state"), "--concurrency", "2"], tmp_path / "executor.log"
    )
    try:
        wait_done(spool, ids, timeout=120)
    finally:
        executor.stop()
    reaped.join(timeout=30)
    assert survivor.returncode == -signal.SIGKILL
    assert [result(spool, i)["state"] for i in ids] == ["done"] * len(ids)
    log = executor.output()
    leftovers = [line for line in log.splitlines() if "leftover" in line]
    assert len(leftovers) == 1 and f"{survivor.pid} sleep" in leftovers[0], leftovers


def test_a_slot_released_clean_skips_the_scan_but_one_whose_holder_died_is_scanned(run_dir: Path) -> None:
    """Issue 18: a scan of /proc for the slot uid's processes at every acquire cost two stats per
    process on the host. A holder that ended its stages and closed its sandbox without an error
    marks the slot clean (its stages' cgroups were emptied and removed); a holder that died
    leaves it "in use", and the next holder finds and kills what it left."""
    uid = 61970
    pool = SlotPool(uid_base=uid, count=1, work_size=16 << 20, state_dir=run_dir / "state")
    lock = LOCK_DIR / f"uid-{uid}.lock"
    slot = pool.acquire()
    pool.release(slot, clean=True)
    assert lock.read_bytes()[:1] == b"c"
    slot = pool.acquire()
    assert lock.read_bytes()[:1] == b"u"
    os.close(slot.lock_fd)  # its holder dies: no release
    survivor = subprocess.Popen(["/bin/sleep", "300"], user=uid, group=uid, extra_groups=[])
    reaped = threading.Thread(target=survivor.wait)
    reaped.start()
    slot = pool.acquire()
    reaped.join(timeout=30)
    assert survivor.returncode == -signal.SIGKILL
    pool.release(slot)  # not said clean: the next holder scans again
    assert lock.read_bytes()[:1] == b"u"


def test_a_clean_slot_skips_checking_its_mount_points_only_in_the_state_dir_it_was_released_in(
    run_dir: Path,
) -> None:
    """A slot released clean in state directory A says so with A's path: A's next holder mounts at
    once, but a holder in state directory B still unmounts what a killed worker left there."""
    uid = 61971
    first = SlotPool(uid_base=uid, count=1, work_size=16 << 20, state_dir=run_dir / "a")
    other = SlotPool(uid_base=uid, count=1, work_size=16 << 20, state_dir=run_dir / "b")
    slot = other.acquire()
    (slot.work / "planted").write_text("from a worker killed in b")
    os.close(slot.lock_fd)  # killed: its mounts stay in b
    slot = first.acquire()
    first.release(slot, clean=True)
    assert (LOCK_DIR / f"uid-{uid}.lock").read_bytes() == b"c" + os.fsencode(run_dir / "a")
    slot = first.acquire()  # the same state directory: its mount points as they were left
    try:
        assert slot.clean and list(slot.work.iterdir()) == []
    finally:
        first.release(slot, clean=True)
    slot = other.acquire()  # another: checked, the leftover mount gone
    try:
        assert slot.clean and list(slot.work.iterdir()) == []
        mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        assert mounts.count(str(slot.work)) == 1, "the killed worker's mount is left under the new one"
    finally:
        other.release(slot)


def test_a_clean_slot_whose_state_directory_was_removed_is_prepared_again(run_dir: Path) -> None:
    """The clean mark is kept with the slot's lock (LOCK_DIR), not in the state directory: a state
    directory removed meanwhile (by an operator, or by a test between two of its runs) must not
    leave the slot unusable ("cannot mount a tmpfs on .../work: No such file or directory")."""
    uid = 61972
    pool = SlotPool(uid_base=uid, count=1, work_size=16 << 20, state_dir=run_dir / "gone")
    pool.release(pool.acquire(), clean=True)
    shutil.rmtree(run_dir / "gone")
    slot = pool.acquire()
    try:
        (slot.work / "x").write_text("usable")
        assert slot.io.is_dir() and (slot.work / "x").read_text() == "usable"
    finally:
        pool.release(slot, clean=True)


# bwrap's monitor killed before the sandbox's pid 1 (a fault only a test can inject), in a process
# of its own that is a child subreaper as the executor's is; then the slot is taken again.
ORPHAN = """
import json, logging, os, signal, sys, time
from dataclasses import replace
from pathlib import Path
from cutor_spool.config import DEFAULT_LIMITS
from cutor_spool.limits import Limits
from cutor_spool.runner.bwrap import BubblewrapBackend
from cutor_spool.runner.sandbox import PIPE
from cutor_spool.runner.slots import SlotPool, become_subreaper, processes_of
from cutor_spool.runner.stage import StageSpec

logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
become_subreaper()
state = Path(sys.argv[1])
pool = SlotPool(uid_base=61960, count=1, work_size=16 << 20, state_dir=state)
backend = BubblewrapBackend(state_dir=state, uid_base=61960, slots=1, tmp_size=16 << 20)
slot = pool.acquire()
box = backend.open(slot, "orphan")
limits = replace(Limits.from_spec(DEFAULT_LIMITS), wall_time=60)
stage = box.spawn(StageSpec("run", ("/bin/sh", "-c", "touch started; exec sleep 60"), limits), stdout=PIPE)
while not (slot.work / "started").exists():
    time.sleep(0.01)
os.kill(stage.proc.pid, signal.SIGKILL)
stage.kill()
stage.wait()
os.close(stage.stdout)
pool.release(slot)
started = time.monotonic()
again = pool.acquire()
took = time.monotonic() - started
print(json.dumps({"uid": slot.uid, "again": again.uid, "took": took, "left": processes_of(slot.uid)}))
pool.release(again)
"""


def test_an_orphaned_sandbox_init_is_reaped_at_once_not_left_to_the_hosts_pid_1(run_dir: Path) -> None:
    """The executor (a child subreaper) reaps the orphaned init's zombie when the slot is next
    taken, instead of waiting for the host's pid 1 (which reaps every ~2 s where measured) while
    logging it as a leftover every 10 ms: 150 warnings before the fix."""
    done = subprocess.run(
        [sys.executable, "-c", ORPHAN, str(run_dir)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["again"] == seen["uid"] and seen["left"] == []
    assert "leftover" not in done.stderr, done.stderr
    assert seen["took"] < 0.5, f"the slot waited {seen['took']:.2f} s for its leftovers"


# A worker with a stage running, then SIGKILLed (what Slurm does to a pilot after KillWait): every
# process of the stage must go with it, as bubblewrap's --die-with-parent makes them.
DIES_MID_STAGE = """
import sys, time
from dataclasses import replace
from pathlib import Path
from cutor_spool.config import DEFAULT_LIMITS
from cutor_spool.limits import Limits
from cutor_spool.runner.bwrap import BubblewrapBackend
from cutor_spool.runner.sandbox import PIPE
from cutor_spool.runner.slots import SlotPool
from cutor_spool.runner.stage import StageSpec

state, warm = Path(sys.argv[1]), sys.argv[2] == "warm"
pool = SlotPool(uid_base=61950, count=1, work_size=16 << 20, state_dir=state)
backend = BubblewrapBackend(state_dir=state, uid_base=61950, slots=1, tmp_size=16 << 20, warm=warm)
assert (backend.trees is not None) == warm
slot = pool.acquire()
box = backend.open(slot, "dies")
limits = replace(Limits.from_spec(DEFAULT_LIMITS), wall_time=120)
script = ("/bin/sh", "-c", "sleep 97.25 & touch started; exec sleep 97.5")
stage = box.spawn(StageSpec("run", script, limits), stdout=PIPE)
while not (slot.work / "started").exists():
    time.sleep(0.01)
print(slot.uid, flush=True)
time.sleep(300)
"""


@pytest.mark.parametrize("construction", ["warm", "bwrap"])
def test_a_stage_dies_with_its_worker_on_either_construction(run_dir: Path, construction: str) -> None:
    """SIGKILL leaves no handler: what ends the stage is the kernel's parent-death signal, which a
    change of uid clears (prctl(2)). A warm slot's pid 1 drops to the slot's uid after setting it,
    so it must set it again: without, the stage's pid 1 and its job outlived the worker (seen with
    Slurm's SIGKILL of a pilot)."""
    worker = subprocess.Popen(
        [sys.executable, "-c", DIES_MID_STAGE, str(run_dir), construction], stdout=subprocess.PIPE, text=True
    )
    try:
        assert worker.stdout is not None
        uid = int(worker.stdout.readline())
        assert any(_sleeps(uid)), "the stage's sleeps are running"
    finally:
        worker.kill()
        worker.wait()
    wait_until(lambda: not any(_sleeps(uid)), 10, "no process of the stage left")


def _sleeps(uid: int) -> list[int]:
    """The slot uid's live (not zombie) processes."""
    return [pid for pid in processes_of(uid) if (info := ProcessInfo.of(pid)) is not None and info.state != "Z"]
