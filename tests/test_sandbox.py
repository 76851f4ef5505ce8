"""The bubblewrap sandbox through its one interface: honest accounting, slots never shared, no
leftovers, and the command line as data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cutor_spool.builder.process import BuildCgroup, start_argv
from cutor_spool.errors import SandboxError
from cutor_spool.limits import Limits
from cutor_spool.runner.bwrap import BubblewrapBackend, BwrapSandbox
from cutor_spool.runner.bwrap_layout import BwrapLayout, bwrap_argv, stage_launch_argv, system_mounts
from cutor_spool.runner.cgroups import Cgroup, CgroupHost, CgroupV1
from cutor_spool.runner.keeper import tree_args
from cutor_spool.runner.launcher import (
    MOUNT_POINT,
    REPORT_ENV,
    REPORT_POINT,
    build_launcher,
    host_argv,
    launcher_dir,
)
from cutor_spool.runner.sandbox import PIPE
from cutor_spool.runner.slots import DEFAULT_STATE_DIR, Slot, SlotPool
from cutor_spool.runner.stage import StageSpec, StageStatus, classify

LIMITS = Limits(
    cpu_time=5,
    wall_time=20,
    memory=512 << 20,
    processes=32,
    file_size=64 << 20,
    open_files=64,
    stack=8 << 20,
    output=1 << 20,
)
C_PROGRAMS = {
    "alloc.c": """
        #include <stdlib.h>
        #include <string.h>
        int main(void) { size_t n = 100u << 20; char *p = malloc(n); memset(p, 1, n); return p[n - 1] == 1 ? 0 : 1; }
    """,
    "busy.c": """
        #include <stdlib.h>
        #include <time.h>
        int main(int argc, char **argv) {
            double want = atof(argv[1]); struct timespec t;
            do { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t); } while (t.tv_sec + t.tv_nsec / 1e9 < want);
            return 0;
        }
    """,
}


@pytest.fixture(scope="module")
def pool() -> SlotPool:
    return SlotPool(uid_base=61000, count=64, work_size=128 << 20)


@pytest.fixture(scope="module", params=["warm", "launcher", "prlimit-setpriv"])
def backend(request: pytest.FixtureRequest) -> BubblewrapBackend:
    """Every sandbox test runs each way a stage can start: on a warm slot (the default: the
    launcher enters a tree made once, keeper.py), through the static launcher and a fresh bwrap
    (`sandbox.warm_slots: false`), and through sh, prlimit and setpriv (hosts without a C
    compiler)."""
    use, warm = request.param != "prlimit-setpriv", request.param == "warm"
    made = BubblewrapBackend(
        state_dir=DEFAULT_STATE_DIR, uid_base=61000, slots=64, tmp_size=32 << 20, launcher=use, warm=warm
    )
    assert (made.launcher is not None) == use and (made.trees is not None) == warm
    return made


@pytest.fixture
def sandbox(pool: SlotPool, backend: BubblewrapBackend) -> Iterator[BwrapSandbox]:
    slot = pool.acquire()
    box = backend.open(slot, "test")
    for name, source in C_PROGRAMS.items():
        path = box.workdir / name
        path.write_text(source)
        os.chown(path, slot.uid, slot.gid)
    out = box.run(StageSpec("compile", ("/bin/sh", "-c", "gcc -O0 -o alloc alloc.c && gcc -O0 -o busy busy.c"), LIMITS))
    assert out.ok, out.stderr
    yield box
    box.close()
    pool.release(slot)


def sh(box: BwrapSandbox, script: str, limits: Limits = LIMITS, **kw: object) -> object:
    return box.run(StageSpec("run", ("/bin/sh", "-c", script), limits, **kw))  # type: ignore[arg-type]


def test_peak_memory_is_the_jobs_own_even_in_a_large_parent(sandbox: BwrapSandbox) -> None:
    ballast = bytearray(300 << 20)  # the supervising process holds 300 MiB
    ballast[::4096] = b"x" * len(ballast[::4096])
    out = sandbox.run(StageSpec("run", ("./alloc",), LIMITS))
    assert out.ok
    assert abs(out.memory - (100 << 20)) <= 0.05 * (100 << 20), out.memory
    del ballast


def test_cpu_time_of_a_one_second_loop_is_one_second(sandbox: BwrapSandbox) -> None:
    out = sandbox.run(StageSpec("run", ("./busy", "1.0"), LIMITS))
    assert out.ok
    assert abs(out.cpu_time - 1.0) <= 0.05, out.cpu_time


def test_cpu_time_of_several_processes_is_summed(sandbox: BwrapSandbox) -> None:
    out = sh(sandbox, "./busy 0.5 & ./busy 0.5 & ./busy 0.5 & wait")
    assert out.ok  # type: ignore[attr-defined]
    assert abs(out.cpu_time - 1.5) <= 0.075, out.cpu_time  # type: ignore[attr-defined]


def test_the_cpu_limit_holds_for_the_sum_not_per_process(sandbox: BwrapSandbox) -> None:
    limits = Limits(**{**LIMITS.to_json(), "cpu_time": 1.0})  # type: ignore[arg-type]
    out = sh(sandbox, "./busy 0.8 & ./busy 0.8 & ./busy 0.8 & wait", limits)
    assert out.status == StageStatus.TIME_LIMIT  # type: ignore[attr-defined]
    assert out.cpu_time < 1.3  # type: ignore[attr-defined]


def test_stdout_bytes_stdin_args_and_exit_codes(sandbox: BwrapSandbox) -> None:
    out = sandbox.run(
        StageSpec(
            "run", ("/bin/sh", "-c", 'printf "%s|" "$@"; cat; exit 3', "sh", "a b", "c"), LIMITS, stdin=b"in\xffput"
        )
    )
    assert (out.status, out.exit_code, out.stdout) == (StageStatus.RUNTIME_ERROR, 3, b"a b|c|in\xffput")
    assert out.to_json()["stdout_base64"]  # not UTF-8: the exact bytes are kept


def test_a_stage_reads_its_stdin_as_a_seekable_file_it_cannot_change(sandbox: BwrapSandbox) -> None:
    """stdin is a sealed memory file: readable twice (seek), and every way of writing it fails,
    so a job cannot grow it (memory charged to the worker) or leave anything to the next stage."""
    script = (
        "test -f /dev/stdin && echo regular; cat; cat /dev/stdin; "
        "(printf evil 1<>/proc/self/fd/0) 2>/dev/null && echo wrote; "
        "(printf evil >>/proc/self/fd/0) 2>/dev/null && echo appended; "
        "(truncate -s 0 /proc/self/fd/0) 2>/dev/null && echo truncated; cat /dev/stdin"
    )
    out = sh(sandbox, script, stdin=b"original\n")
    assert out.stdout == b"regular\noriginal\noriginal\noriginal\n", out  # type: ignore[attr-defined]
    empty = sh(sandbox, "test -f /dev/stdin && echo regular; wc -c")
    assert empty.stdout == b"regular\n0\n", empty  # type: ignore[attr-defined]


def test_a_stage_ends_as_its_job_did_not_as_its_exit_code_suggests(
    sandbox: BwrapSandbox, backend: BubblewrapBackend
) -> None:
    """`exit 152` is no SIGXCPU and `exit 139` no SIGSEGV: the launcher reports the job's own wait
    status. A job that forges a report, or kills its parent, does not change its verdict."""
    if backend.launcher is None:
        pytest.skip("without the static launcher only the exit code is known (documented)")
    seen = {
        script: sh(sandbox, script)
        for script in (
            "exit 152",
            "exit 139",
            "kill -XCPU $$",
            "kill -SEGV $$",
            "echo bogus 0 > /run/cutor/.exit; kill -SEGV $$",
            "kill -9 1; kill -TERM $PPID; exit 200",
        )
    }
    ends = {script: (out.status, out.exit_code, out.signal) for script, out in seen.items()}  # type: ignore[attr-defined]
    assert ends == {
        "exit 152": (StageStatus.RUNTIME_ERROR, 152, None),
        "exit 139": (StageStatus.RUNTIME_ERROR, 139, None),
        "kill -XCPU $$": (StageStatus.SIGNALED, None, signal.SIGXCPU),
        "kill -SEGV $$": (StageStatus.SIGNALED, None, signal.SIGSEGV),
        "echo bogus 0 > /run/cutor/.exit; kill -SEGV $$": (StageStatus.SIGNALED, None, signal.SIGSEGV),
        "kill -9 1; kill -TERM $PPID; exit 200": (StageStatus.RUNTIME_ERROR, 200, None),
    }
    # The job cannot read the report (and so learn a token from it), only write to it.
    out = sh(sandbox, "cat /run/cutor/.exit; echo $?")
    assert out.stdout.endswith(b"1\n") and b"Permission denied" in out.stderr  # type: ignore[attr-defined]
    real = sandbox.run(StageSpec("run", ("./busy", "9"), Limits(**{**LIMITS.to_json(), "cpu_time": 1.0})))  # type: ignore[arg-type]
    # The kernel's SIGXCPU at the rlimit may come with the cgroup's figure a little short of it (its
    # clock is tick-sampled): still a time limit (stage.XCPU_SHARE).
    assert real.status == StageStatus.TIME_LIMIT and real.cpu_time >= 0.8


def test_no_process_outlives_its_stage(sandbox: BwrapSandbox) -> None:
    out = sh(sandbox, "setsid sleep 100 & (sleep 100 &) ; echo gone")
    assert out.ok  # type: ignore[attr-defined]
    leftover = subprocess.run(["pgrep", "-u", str(sandbox.slot.uid)], capture_output=True, text=True).stdout
    assert leftover == ""


def test_network_is_off_unless_the_stage_asks(sandbox: BwrapSandbox) -> None:
    off = sh(
        sandbox,
        "python3 -c 'import socket; print(socket.if_nameindex())'",
    )
    assert off.ok and b"'lo'" in off.stdout and b"eth" not in off.stdout  # type: ignore[attr-defined]
    on = sandbox.run(
        StageSpec(
            "run", ("python3", "-c", "import socket; print(len(socket.if_nameindex()) > 1)"), LIMITS, network=True
        )
    )
    assert on.stdout == b"True\n"


def test_two_executors_on_one_host_never_share_a_slot() -> None:
    pools = [SlotPool(uid_base=61000, count=64, work_size=16 << 20) for _ in range(2)]
    taken: list[tuple[SlotPool, Slot]] = []
    lock = threading.Lock()

    def grab(pool: SlotPool) -> None:
        for _ in range(10):
            slot = pool.acquire()
            with lock:
                taken.append((pool, slot))

    threads = [threading.Thread(target=grab, args=(p,)) for p in pools]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len({slot.uid for _, slot in taken}) == 20
    finally:
        for pool, slot in taken:
            pool.release(slot)


def _idle_uid(pool: SlotPool, busy: int) -> int:
    for uid in range(61000, 61064):
        if uid != busy:
            with pool.idle(uid) as free:
                if free:
                    return uid
    raise AssertionError("no idle slot")


def test_sweep_removes_what_a_dead_worker_left_but_not_a_live_slot(pool: SlotPool, backend: BubblewrapBackend) -> None:
    live = pool.acquire()
    leftovers = []
    for uid in (live.uid, _idle_uid(pool, live.uid)):
        cgroup = backend.cgroups.create(f"u{uid}-leftover")
        proc = subprocess.Popen(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "sleep", "100"])
        for procs in cgroup.procs_files:
            procs.write_text(str(proc.pid))
        leftovers.append((cgroup, proc))
    try:
        assert backend.sweep(pool) >= 1
        assert leftovers[1][1].wait(5) == -9  # the dead worker's leftover is gone
        assert leftovers[0][1].poll() is None and leftovers[0][0].pids()  # the live slot's is untouched
    finally:
        for cgroup, proc in leftovers:
            cgroup.remove()
            proc.wait()
        pool.release(live)


def test_sweep_passes_over_a_cgroup_its_holder_removed_after_the_listing(
    pool: SlotPool, backend: BubblewrapBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another executor on the same state directory lists a live stage's cgroup, the stage ends
    (cgroup removed, slot released), then the sweep takes the slot's lock: it must pass over the
    vanished cgroup, not fail the whole sweep (seen as 'cleaning up after dead workers failed').
    The interleaving is injected by removing the cgroup right after the real listing."""
    uid = _idle_uid(pool, -1)
    cgroup = backend.cgroups.create(f"u{uid}-gone")
    listing = backend.cgroups.existing

    def listed_then_removed(prefix: str) -> list[Cgroup]:
        found = listing(prefix)
        cgroup.remove()
        return found

    monkeypatch.setattr(backend.cgroups, "existing", listed_then_removed)
    assert any(c.name == cgroup.name for c in listing("u"))
    backend.sweep(pool)  # raised FileNotFoundError: the whole sweep failed
    assert not any(c.name == cgroup.name for c in listing("u"))


def test_bwrap_argv_mounts_only_what_the_stage_may_write() -> None:
    layout = BwrapLayout(
        init="/usr/bin/tini-static",
        system=("--ro-bind", "/usr", "/usr"),
        tmp_size=1 << 20,
        etc=Path("/state/etc.d/etc-1"),
        etc_net=Path("/state/etc.d/etc-net-1"),
    )
    argv = bwrap_argv(
        layout,
        slot_root=Path("/state/slots/61001"),
        workdir="work",
        network=False,
        ro_binds=("/nix/store/abc-python3",),
        env={"A": "1"},
        status_fd=9,
        command=("./run",),
    )
    writable = [argv[i + 2] for i, a in enumerate(argv) if a in ("--bind", "--dev-bind")]
    tmpfs = [argv[i + 1] for i, a in enumerate(argv) if a == "--tmpfs"]
    assert writable == ["/work"] and tmpfs == ["/dev/shm", "/tmp"]
    assert "--unshare-net" in argv and "--disable-userns" in argv and "--die-with-parent" in argv
    assert argv[argv.index("/nix/store/abc-python3") - 1] == "--ro-bind"
    assert argv[-2:] == ["cutor-stage", "./run"]
    assert argv[argv.index("--as-pid-1") + 2 : argv.index("--as-pid-1") + 4] == ["/init", "--"]
    assert argv.count("--remount-ro") == 2
    # With the static launcher, it is pid 1 and the job's parent, reporting its wait status.
    launched = BwrapLayout(**{**layout.__dict__, "launcher": Path("/state/etc.d/cutor-launch-1")})
    argv = bwrap_argv(
        launched, slot_root=Path("/s"), workdir="work", network=False, ro_binds=(), env={"CUTOR_REPORT": "mine"},
        status_fd=9, command=("./run",), report_token="t0k",
    )  # fmt: skip
    assert argv[argv.index("--as-pid-1") + 2 :] == [MOUNT_POINT, "init=yes", f"report={REPORT_POINT}", "--", "./run"]
    assert argv[argv.index(MOUNT_POINT) - 1] == "/state/etc.d/cutor-launch-1" and "/init" not in argv
    assert argv[argv.index(REPORT_ENV) + 1] == "t0k"  # the job's own env cannot set the token
    assert "--unshare-net" not in bwrap_argv(
        layout, slot_root=Path("/s"), workdir="work", network=True, ro_binds=(), env={}, status_fd=9, command=("x",)
    )
    launch = stage_launch_argv([Path("/cg/a/cgroup.procs")], LIMITS, 61001, 61001)
    assert "--reuid=61001" in launch and "--nproc=34" in launch and "--core=0" in launch
    assert f"--fsize={LIMITS.file_size}" in launch and "--cpu=5:6" in launch


def read_only_mounts(argv: list[str]) -> list[tuple[str, str, str]]:
    """The `--ro-bind SRC DEST` and `--symlink TARGET DEST` mounts of a bubblewrap-syntax argv, in order."""
    return [(arg, argv[i + 1], argv[i + 2]) for i, arg in enumerate(argv) if arg in ("--ro-bind", "--symlink")]


@pytest.mark.parametrize("network", [False, True])
@pytest.mark.parametrize("extra_ro", [(), ("/opt/tools", "/srv/data set")])
@pytest.mark.parametrize("store", [(), ("/nix/store/abc-python3", "/nix/store/def-glibc")])
def test_a_warm_tree_holds_the_same_read_only_mounts_as_a_fresh_stage(
    network: bool, extra_ro: tuple[str, ...], store: tuple[str, ...]
) -> None:
    """A warm slot's tree (keeper.tree_args) is a fresh stage's read-only mounts (bwrap_argv), in
    the same order, so the two constructions cannot drift apart: the only one the tree lacks is
    /run/cutor, which each warm stage attaches itself (it is the slot's, new at each acquire)."""
    layout = BwrapLayout(
        init="/usr/bin/tini-static",
        system=tuple(system_mounts()),
        tmp_size=1 << 20,
        etc=Path("/state/etc.d/etc-1"),
        etc_net=Path("/state/etc.d/etc-net-1"),
        extra_ro=extra_ro,
        launcher=Path("/state/etc.d/cutor-launch-1"),
    )
    tree = tree_args(layout, network=network, ro_binds=store)
    fresh = bwrap_argv(
        layout, slot_root=Path("/state/slots/61001"), workdir="work", network=network, ro_binds=store,
        env={}, status_fd=9, command=("./run",),
    )  # fmt: skip
    mounts = read_only_mounts(tree)
    assert len(tree) == 3 * len(mounts)  # nothing in the tree but read-only mounts
    fresh_mounts = read_only_mounts(fresh)
    assert [m for m in fresh_mounts if m in mounts] == mounts
    assert [m for m in fresh_mounts if m not in mounts] == [("--ro-bind", "/state/slots/61001/io", "/run/cutor")]
    etc = "/state/etc.d/etc-net-1" if network else "/state/etc.d/etc-1"
    assert ("--ro-bind", etc, "/etc") in mounts and ("--ro-bind", "/usr", "/usr") in mounts
    assert ("--ro-bind", "/state/etc.d/cutor-launch-1", MOUNT_POINT) in mounts
    binds = [("--ro-bind", path, path) for path in (*extra_ro, *store)]
    assert mounts[len(mounts) - len(binds) :] == binds


def test_a_build_starts_through_the_same_launcher_guarded_and_as_root() -> None:
    """Nix stays root (its own build users) and the launcher stays as its guard; without the static
    launcher there is no guard, and no silent start without one."""
    cgroup = CgroupV1("nixbuild-1-ab", {"memory": Path("/cg/memory/b"), "pids": Path("/cg/pids/b")})
    argv = start_argv(["nix", "eval"], BuildCgroup(cgroup, Path("/state/launcher/cutor-launch")))
    assert argv[0] == "/state/launcher/cutor-launch" and argv[-3:] == ["--", "nix", "eval"]
    assert "cgroup=/cg/memory/b/cgroup.procs" in argv and "guard=yes" in argv
    assert not any(arg.startswith("user=") for arg in argv)
    stage = stage_launch_argv([Path("/cg/a/cgroup.procs")], LIMITS, 61001, 61001, Path("/l"))
    assert "user=61001:61001" in stage and "guard=yes" not in stage
    with pytest.raises(SandboxError):
        host_argv(None, cgroup.procs_files, guard=True)


@pytest.mark.parametrize(
    ("observed", "expected"),
    [
        ({"killed_for": "output", "returncode": -9, "oom_kills": 0, "cpu_time": 0.1}, StageStatus.OUTPUT_LIMIT),
        ({"killed_for": None, "returncode": 137, "oom_kills": 1, "cpu_time": 0.1}, StageStatus.MEMORY_LIMIT),
        ({"killed_for": "cpu", "returncode": -9, "oom_kills": 0, "cpu_time": 1.02}, StageStatus.TIME_LIMIT),
        ({"killed_for": None, "returncode": 152, "oom_kills": 0, "cpu_time": 0.99}, StageStatus.TIME_LIMIT),
        ({"killed_for": "wall", "returncode": -9, "oom_kills": 0, "cpu_time": 0.0}, StageStatus.WALL_TIME_LIMIT),
        ({"killed_for": None, "returncode": 139, "oom_kills": 0, "cpu_time": 0.0}, StageStatus.SIGNALED),
        ({"killed_for": None, "returncode": 1, "oom_kills": 0, "cpu_time": 0.0}, StageStatus.RUNTIME_ERROR),
        ({"killed_for": None, "returncode": 0, "oom_kills": 0, "cpu_time": 0.0}, StageStatus.OK),
        # The job's own wait status (launcher.ExitReport) says exit code or signal; a time limit is CPU.
        ({"returncode": 152, "wait_status": 152 << 8, "cpu_time": 0.003}, StageStatus.RUNTIME_ERROR),
        ({"returncode": 139, "wait_status": 139 << 8, "cpu_time": 0.0}, StageStatus.RUNTIME_ERROR),
        ({"returncode": 152, "wait_status": signal.SIGXCPU, "cpu_time": 0.003}, StageStatus.SIGNALED),
        ({"returncode": 152, "wait_status": signal.SIGXCPU, "cpu_time": 0.99}, StageStatus.TIME_LIMIT),
        ({"returncode": 0, "wait_status": 0, "cpu_time": 1.0}, StageStatus.TIME_LIMIT),
        ({"returncode": 139, "wait_status": signal.SIGSEGV, "cpu_time": 0.0}, StageStatus.SIGNALED),
        # Without a report only the exit code is there, but SIGXCPU's name is no longer a time limit.
        ({"returncode": 152, "cpu_time": 0.003}, StageStatus.SIGNALED),
    ],
)
def test_classify(observed: dict[str, object], expected: StageStatus) -> None:
    limits = Limits(**{**LIMITS.to_json(), "cpu_time": 1.0})  # type: ignore[arg-type]
    observed = {"killed_for": None, "oom_kills": 0, **observed}
    status, exit_code, sig = classify(started=True, limits=limits, **observed)  # type: ignore[arg-type]
    assert status == expected
    if "wait_status" in observed:
        wait = int(observed["wait_status"])  # type: ignore[call-overload]
        assert (exit_code, sig) == ((wait >> 8, None) if wait & 0x7F == 0 else (None, wait & 0x7F))


def test_a_sandbox_that_fails_to_start_is_an_internal_error_not_the_jobs(sandbox: BwrapSandbox) -> None:
    """bwrap reports its child's pid before the child mounts anything: a set-up failure (here a
    bind source that does not exist) must not pass for the job exiting 1."""
    spec = StageSpec("run", ("/bin/sh", "-c", "echo never"), LIMITS, ro_binds=("/nonexistent/store-path",))
    out = sandbox.run(spec)
    assert out.status == StageStatus.INTERNAL_ERROR
    assert "did not start" in (out.message or "") and b"never" not in out.stdout


def test_the_started_marker_is_not_part_of_the_jobs_output(sandbox: BwrapSandbox) -> None:
    out = sandbox.run(StageSpec("run", ("/bin/sh", "-c", "printf 'x'"), LIMITS))
    assert (out.status, out.stdout, out.output) == (StageStatus.OK, b"x", b"x")
    silent = sandbox.run(StageSpec("run", ("true",), LIMITS))
    assert (silent.status, silent.stdout) == (StageStatus.OK, b"")


def test_the_job_is_the_oom_killers_first_choice_and_cannot_change_that(sandbox: BwrapSandbox) -> None:
    # Its worker is the last choice (watcher/lost.py): on a host out of memory, the job goes first.
    out = sh(sandbox, "cat /proc/self/oom_score_adj; echo -1000 > /proc/self/oom_score_adj || echo refused")
    assert out.stdout == b"1000\nrefused\n", out.stderr  # type: ignore[attr-defined]


def test_the_job_runs_as_the_slot_uid_without_groups_or_a_way_back(sandbox: BwrapSandbox) -> None:
    out = sh(sandbox, "id -u; id -g; id -G; grep -E '^(NoNewPrivs|CapEff|CapPrm)' /proc/self/status")
    assert out.ok, out.stderr  # type: ignore[attr-defined]
    slot = sandbox.slot
    lines = out.stdout.decode().split("\n")  # type: ignore[attr-defined]
    assert lines[:3] == [str(slot.uid), str(slot.gid), str(slot.gid)]
    status = dict(line.split(":\t") for line in lines[3:] if line)
    assert status == {"NoNewPrivs": "1", "CapPrm": "0000000000000000", "CapEff": "0000000000000000"}


def test_two_spawned_sandboxes_piped_together(pool: SlotPool, backend: BubblewrapBackend) -> None:
    """What interactive problems are built on: two sandboxes started at once, the first's stdout
    the second's stdin, each supervised in the background with its own output and limits."""
    slots = [pool.acquire(), pool.acquire()]
    boxes = [backend.open(slot, f"pipe-{n}") for n, slot in enumerate(slots)]
    try:
        first = boxes[0].spawn(
            StageSpec("run", ("/bin/sh", "-c", "cat; echo from-first >&2; exit 4"), LIMITS), stdin=PIPE, stdout=PIPE
        )
        assert first.stdin is not None and first.stdout is not None
        second = boxes[1].spawn(StageSpec("run", ("tr", "a-z", "A-Z"), LIMITS), stdin=first.stdout, stdout=PIPE)
        os.close(first.stdout)  # the second sandbox holds it now
        assert second.stdout is not None
        os.write(first.stdin, b"hello\npiped \xff world\n")
        os.close(first.stdin)
        with os.fdopen(second.stdout, "rb") as out:
            came_out = out.read()
        one, two = first.wait(), second.wait()
    finally:
        for box, slot in zip(boxes, slots, strict=True):
            box.close()
            pool.release(slot)
    assert came_out == b"HELLO\nPIPED \xff WORLD\n"
    assert (one.status, one.exit_code, one.stdout, one.stderr) == (StageStatus.RUNTIME_ERROR, 4, b"", b"from-first\n")
    assert (two.status, two.exit_code, two.stdout, two.stderr) == (StageStatus.OK, 0, b"", b"")
    assert one.to_json()["stage"] == two.to_json()["stage"] == "run"


def test_a_spawned_stage_can_be_killed(sandbox: BwrapSandbox) -> None:
    started = sandbox.spawn(StageSpec("run", ("sleep", "100"), LIMITS), stdout=None)
    started.kill()
    out = started.wait()
    assert out.status == StageStatus.INTERNAL_ERROR and out.wall_time < 10
    assert "stopped" in (out.message or "")


WORKER = "import subprocess, sys, time; subprocess.Popen(sys.argv[1:]); time.sleep(1000)"


def test_the_launchers_guard_kills_its_cgroup_when_the_worker_dies(tmp_path: Path) -> None:
    """A build's guard (guard=yes): when its parent, the worker, dies, everything in the cgroup
    goes, even processes that left the job's session (as Nix's sandboxed builders do)."""
    launcher = build_launcher(launcher_dir(DEFAULT_STATE_DIR))
    cgroup = CgroupHost.detect().create(f"guard-test-{os.getpid()}")
    try:
        job = [*host_argv(launcher, cgroup.procs_files, guard=True), "sh", "-c", "setsid sleep 1000 & sleep 1000"]
        worker = subprocess.Popen([sys.executable, "-c", WORKER, *job])
        deadline = time.monotonic() + 10
        while len(cgroup.pids()) < 4 and time.monotonic() < deadline:  # guard, sh and two sleeps
            time.sleep(0.01)
        assert len(cgroup.pids()) == 4, cgroup.pids()
        worker.kill()
        worker.wait()
        while cgroup.pids() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cgroup.pids() == []
    finally:
        cgroup.remove()
