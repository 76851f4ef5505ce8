"""Nothing of one stage survives into the next (issue 18), on warm slots (runner/keeper.py: every
stage of an environment enters one read-only tree made once) and through a fresh bwrap alike.

A stage of submission A leaves every kind of state behind it can: files in /tmp, /dev/shm and
/work; SysV shared memory, message queues and semaphores; a POSIX message queue; keys in the
uid's user, user-session and persistent keyrings; a process that escaped into a session of its
own, holding an abstract Unix socket; CPU time and memory in its cgroup. The next stage of A (its
/work aside, which is A's), and a stage of submission B on the same slot (the same uid), find
none of it; neither does a stage running at the same time, on the same slot or on another one
(warm slots share one tree between slots).

The spools here allow the `keyring` system calls, which the default filter refuses, so that a
job can put keys where a later one might find them.

How each check was seen to fail on a construction that leaks (a launcher built from a changed
launcher.c and named in $CUTOR_SPOOL_LAUNCHER, the warm parameter only):
- CLONE_NEWIPC left out of the stage's `unshare`: `sysv_*` and `mq` found by A's next stage and
  by B (and by the concurrent stages);
- the tmpfs mounts of /tmp and /dev/shm left out (the tree's own directories, made writable):
  `tmp` and `shm` found; sharing the tree without a new mount namespace per stage (no CLONE_NEWNS)
  makes every stage's /tmp and /work the first stage's;
- the keyring clearing left out: `key_user`, `key_user_session` and `key_persistent` found by the
  next stage and by B (the uid's keyrings are the host's without a user namespace);
- CLONE_NEWNET left out: `abstract` found by the stages running at the same time;
- CLONE_NEWPID left out: `process` found at the same time (and the host sees the survivor until
  the cgroup kill);
- the cgroup counters: a stage given its predecessor's cgroup reports its CPU time and memory.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cutor_spool.config import SeccompConfig
from cutor_spool.limits import Limits
from cutor_spool.runner.bwrap import BubblewrapBackend, BwrapSandbox
from cutor_spool.runner.slots import SlotPool, processes_of
from cutor_spool.runner.stage import StageOutput, StageSpec

UID_BASE = 61900  # a range of its own: these pools hold one or two slots
LIMITS = Limits(
    cpu_time=10, wall_time=60, memory=512 << 20, processes=32, file_size=64 << 20, open_files=64, stack=8 << 20,
    output=1 << 20,
)  # fmt: skip

COMMON = r"""
import ctypes, json, os, socket, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
ADD_KEY, KEYCTL = 248, 250  # x86-64
SEARCH, GET_PERSISTENT = 10, 22
USER, USER_SESSION, SESSION = -4, -5, -3
KEY, KEY_ID = b"cutor-leak", 0x5EED
RINGS = {"key_user": lambda: USER, "key_user_session": lambda: USER_SESSION,
         "key_persistent": lambda: libc.syscall(KEYCTL, GET_PERSISTENT, -1, SESSION)}
"""

PLANT = (
    COMMON
    + r"""
planted = {}
for name, path in (("tmp", "/tmp/leak"), ("shm", "/dev/shm/leak"), ("work", "/work/leak")):
    open(path, "w").write("x")
    planted[name] = os.path.exists(path)
planted["sysv_shm"] = libc.shmget(KEY_ID, 4096, 0o1666) >= 0
planted["sysv_msg"] = libc.msgget(KEY_ID, 0o1666) >= 0
planted["sysv_sem"] = libc.semget(KEY_ID, 1, 0o1666) >= 0
planted["mq"] = libc.mq_open(b"/cutor-leak", os.O_CREAT | os.O_RDWR, 0o666, None) >= 0
for name, ring in RINGS.items():
    planted[name] = libc.syscall(ADD_KEY, b"user", KEY, b"x", 1, ctypes.c_long(ring())) >= 0
# A survivor: a session of its own, an abstract socket, the name the checks look for.
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        server = socket.socket(socket.AF_UNIX)
        server.bind(b"\0cutor-leak")
        server.listen()
        server.set_inheritable(True)  # kept across the exec
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(600)", "cutor-leak-sleeper"])
    os._exit(0)
for _ in range(500):
    try:
        socket.socket(socket.AF_UNIX).connect(b"\0cutor-leak")
        planted["abstract"] = planted["process"] = True
        break
    except OSError:
        time.sleep(0.01)
memory = bytearray(64 << 20)
memory[::4096] = b"x" * len(memory[::4096])
end = time.process_time() + 0.3
while time.process_time() < end:
    pass
print(json.dumps(planted))
sys.stdout.flush()
if len(sys.argv) > 1:  # `wait`: say so, and stay until the host lets it go
    open("/work/planted", "w").close()
    while not os.path.exists("/work/go"):
        time.sleep(0.01)
"""
)

CHECK = (
    COMMON
    + r"""
found = [name for name, path in (("tmp", "/tmp/leak"), ("shm", "/dev/shm/leak"), ("work", "/work/leak"))
         if os.path.exists(path)]
for name, make in (("sysv_shm", lambda: libc.shmget(KEY_ID, 0, 0)), ("sysv_msg", lambda: libc.msgget(KEY_ID, 0)),
                   ("sysv_sem", lambda: libc.semget(KEY_ID, 0, 0)),
                   ("mq", lambda: libc.mq_open(b"/cutor-leak", os.O_RDONLY, 0, None))):
    if make() >= 0:
        found.append(name)
for name, ring in RINGS.items():
    if libc.syscall(KEYCTL, SEARCH, ctypes.c_long(ring()), b"user", KEY, 0) >= 0:
        found.append(name)
try:
    socket.socket(socket.AF_UNIX).connect(b"\0cutor-leak")
    found.append("abstract")
except OSError:
    pass
for pid in set(filter(str.isdigit, os.listdir("/proc"))) - {str(os.getpid())}:  # this script names it too
    try:
        if open(f"/proc/{pid}/cmdline", "rb").read().endswith(b"\0cutor-leak-sleeper\0"):
            found.append("process")
    except OSError:
        pass
print(json.dumps(found))
"""
)
KINDS = {"tmp", "shm", "work", "sysv_shm", "sysv_msg", "sysv_sem", "mq", "key_user", "key_user_session"}
KINDS |= {"key_persistent", "abstract", "process"}


@pytest.fixture(scope="module", params=["warm", "bwrap"])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BubblewrapBackend]:
    state = Path("/run/cutor-spool-test-warm")
    made = BubblewrapBackend(
        state_dir=state, uid_base=UID_BASE, slots=2, tmp_size=32 << 20, seccomp=SeccompConfig(allow=["keyring"]),
        warm=request.param == "warm",
    )  # fmt: skip
    assert (made.trees is not None) == (request.param == "warm")
    yield made
    made.close()


def _pool(backend: BubblewrapBackend, count: int) -> SlotPool:
    return SlotPool(uid_base=UID_BASE, count=count, work_size=128 << 20, state_dir=Path("/run/cutor-spool-test-warm"))


def _run(box: BwrapSandbox, script: str, *args: str) -> StageOutput:
    return box.run(StageSpec("run", ("/usr/bin/python3", "-c", script, *args), LIMITS))


def _planted(out: StageOutput) -> None:
    assert out.ok, (out.status, out.stderr)
    planted = json.loads(out.stdout.splitlines()[0])
    assert planted == dict.fromkeys(KINDS, True), planted  # a state the job could not leave tests nothing


def _found(out: StageOutput) -> set[str]:
    assert out.ok, (out.status, out.stderr)
    return set(json.loads(out.stdout))


def test_a_stage_leaves_nothing_for_its_submissions_next_stage_nor_for_the_next_submission(
    backend: BubblewrapBackend,
) -> None:
    pool = _pool(backend, 1)  # one slot: B gets A's uid
    slot = pool.acquire()
    box = backend.open(slot, "A")
    try:
        plant = _run(box, PLANT)
        _planted(plant)
        assert processes_of(slot.uid) == []  # the survivor went with A's stage
        nxt = _run(box, CHECK)
        assert _found(nxt) == {"work"}  # its own /work, and nothing else
        # fresh cgroup counters: the planting stage used 0.3 s and 64 MiB, this one next to nothing
        assert plant.cpu_time >= 0.25 and plant.memory >= 64 << 20, (plant.cpu_time, plant.memory)
        assert nxt.cpu_time < 0.2 and nxt.memory < 48 << 20, (nxt.cpu_time, nxt.memory)
    finally:
        box.close()
        pool.release(slot, clean=True)
    slot = pool.acquire()
    box = backend.open(slot, "B")
    try:
        assert slot.uid == UID_BASE
        assert _found(_run(box, CHECK)) == set()
    finally:
        box.close()
        pool.release(slot, clean=True)


def test_stages_running_at_once_on_one_slot_or_two_see_nothing_of_each_other(backend: BubblewrapBackend) -> None:
    pool = _pool(backend, 2)
    first, second = pool.acquire(), pool.acquire()
    box, other = backend.open(first, "A"), backend.open(second, "B")
    outputs: list[StageOutput] = []
    planting = threading.Thread(target=lambda: outputs.append(_run(box, PLANT, "wait")))
    planting.start()
    try:
        deadline = time.monotonic() + 30
        while not (first.work / "planted").exists():  # everything planted, the survivor's socket bound
            assert planting.is_alive() and time.monotonic() < deadline, outputs
            time.sleep(0.01)
        same_slot = _found(_run(box, CHECK))
        other_slot = _found(_run(other, CHECK))
    finally:
        (first.work / "go").touch()
        planting.join()
        box.close()
        other.close()
        pool.release(first, clean=True)
        pool.release(second, clean=True)
    _planted(outputs[0])
    assert same_slot == {"work"}
    assert other_slot == set()


def test_no_process_a_job_can_see_names_a_host_path_and_it_holds_no_descriptor_of_ours(
    backend: BubblewrapBackend,
) -> None:
    """On a warm slot the stage's pid 1 is the launcher that entered the tree, not a new exec: the
    host's options it was started with (cgroup and slot paths) must not be in /proc/1/cmdline,
    nor may the job inherit a descriptor it was handed. Seen to fail with `hide_host_options`
    left out of launcher.c, and with the tree's descriptor left open in the stage's pid 1."""
    pool = _pool(backend, 1)
    slot = pool.acquire()
    box = backend.open(slot, "A")
    try:
        script = "cat /proc/[0-9]*/cmdline /proc/self/mountinfo | tr '\\0' ' '; ls /proc/self/fd >/tmp/fd; cat /tmp/fd"
        out = box.run(StageSpec("run", ("/bin/sh", "-c", script), LIMITS))
    finally:
        box.close()
        pool.release(slot, clean=True)
    assert out.ok and b"init" in out.stdout, (out.stdout, out.stderr)
    for host in (b"/run/cutor-spool-test-warm", b"/sys/fs/cgroup", b"cgroup=", b"work="):
        assert host not in out.stdout, out.stdout
    # and no descriptor of the launcher's (the tree's or a network namespace, the env, the filter)
    assert out.stdout.endswith(b"\n0\n1\n2\n3\n"), out.stdout[-200:]  # 3: ls's own listing
