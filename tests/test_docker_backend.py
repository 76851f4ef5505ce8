"""The Docker backend against a real engine, in the image tests/docker_image/build.sh makes.

Each test opens a real sandbox (a real slot: its uid, its tmpfs /work) and runs stages in real
containers; what is checked is what a user reads in a stage's result: status, bytes of output,
CPU and memory, and that the container is fit for the next stage. The last test runs a real
`cutor-spool executor --backend docker` on a spool.

The slots here use uids from 63000, away from the 61000 range of the other suites: slot locks
live in each test's own state directory, and a bubblewrap suite running at the same time on this
host would otherwise take the same uid and kill our containers' processes as its leftovers.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import docker
import pytest
from conftest import drop, make_submission, result, stage, unmount_under, wait_done, write_config
from docker_image.fixtures import docker_image  # noqa: F401 - a fixture

from cutor_spool.config import DEFAULT_LIMITS, SpoolConfig
from cutor_spool.errors import SandboxError
from cutor_spool.limits import Limits
from cutor_spool.runner.docker import DockerBackend
from cutor_spool.runner.docker_sandbox import DockerSandbox
from cutor_spool.runner.launcher import SOURCE
from cutor_spool.runner.slots import SlotPool, processes_of
from cutor_spool.runner.stage import StageOutput, StageSpec, StageStatus

pytestmark = pytest.mark.docker

UID_BASE = 63000
SLOTS = 8
MiB = 2**20
LIMITS = replace(
    Limits.from_spec(DEFAULT_LIMITS), cpu_time=1.0, wall_time=3.0, memory=128 * MiB, processes=32, output=64 * 1024
)


def config(image: str, **docker_extra: Any) -> SpoolConfig:
    return SpoolConfig.model_validate(
        {
            "docker": {"image": image, **docker_extra},
            "sandbox": {"uid_base": UID_BASE, "slots": SLOTS, "work_size": "128MiB", "tmp_size": "32MiB"},
        }
    )


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    state = tmp_path_factory.mktemp("docker-state")
    yield state
    unmount_under(state)  # or pytest cannot remove it (the next worker here would unmount them)


@pytest.fixture(scope="module")
def backend(docker_image: str, state_dir: Path) -> Iterator[DockerBackend]:  # noqa: F811
    backend = DockerBackend(config(docker_image), state_dir)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def pool(state_dir: Path, docker_image: str) -> SlotPool:  # noqa: F811
    return SlotPool(uid_base=UID_BASE, count=SLOTS, work_size=128 * MiB, state_dir=state_dir)


@pytest.fixture
def sandbox(backend: DockerBackend, pool: SlotPool) -> Iterator[DockerSandbox]:
    slot = pool.acquire()
    box = backend.open(slot, "test")
    try:
        yield box
    finally:
        box.close()
        pool.release(slot)


def sh(script: str, limits: Limits = LIMITS, **kwargs: Any) -> StageSpec:
    return StageSpec(name="run", command=("/bin/sh", "-c", script), limits=limits, **kwargs)


def run(box: DockerSandbox, script: str, limits: Limits = LIMITS, **kwargs: Any) -> StageOutput:
    return box.run(sh(script, limits, **kwargs))


def containers_of(box: DockerSandbox) -> set[str]:
    return {c.id for c in box.containers.values()}


def leftovers(box: DockerSandbox) -> list[str]:
    """What runs in the container, seen from a fresh stage, besides that stage and the container's
    own init and keeper."""
    out = run(box, "ps -eo args=")
    assert out.status == StageStatus.OK, out
    keeper = "/run/cutor-launch keep /run/cutor-alive"
    # the stage's own launcher stays as its parent (its options show as `oom 1000 ...`)
    ours = (f"/sbin/docker-init -- {keeper}", keeper, "/bin/sh -c ps", "ps -eo", "/run/cutor-launch oom ")
    lines = out.stdout.decode().splitlines()
    assert sum(line.startswith(ours[:2]) for line in lines) == 2, lines
    return [line for line in lines if not line.startswith(ours)]


# -- running and isolation ---------------------------------------------------------------------


def test_ok_run_keeps_exact_bytes_and_stdin(sandbox: DockerSandbox) -> None:
    out = run(sandbox, r"printf 'out\000\377\n'; printf 'err\n' >&2; cat", stdin=b"from stdin\n")
    assert out.status == StageStatus.OK and out.exit_code == 0
    assert out.stdout == b"out\x00\xff\nfrom stdin\n"
    assert out.stderr == b"err\n"
    assert out.to_json()["stdout_base64"]  # not UTF-8: the exact bytes are kept
    assert out.backend == "docker"


def test_runtime_error_keeps_the_exit_code(sandbox: DockerSandbox) -> None:
    out = run(sandbox, "echo failing >&2; exit 3")
    assert (out.status, out.exit_code, out.stderr) == (StageStatus.RUNTIME_ERROR, 3, b"failing\n")


def test_job_runs_as_the_slot_uid_never_root(sandbox: DockerSandbox) -> None:
    out = run(sandbox, "id -u; id -g; id -un; grep -E '^(Cap(Eff|Prm|Bnd)|NoNewPrivs)' /proc/self/status")
    lines = out.stdout.decode().split()
    assert lines[:3] == [str(sandbox.slot.uid), str(sandbox.slot.gid), "sandbox"]
    assert sandbox.slot.uid >= UID_BASE
    status = dict(zip(lines[3::2], lines[4::2], strict=True))
    assert status == {"CapPrm:": "0000000000000000", "CapEff:": "0000000000000000",
                      "CapBnd:": "0000000000000000", "NoNewPrivs:": "1"}  # fmt: skip


def test_the_job_is_the_oom_killers_first_choice(sandbox: DockerSandbox) -> None:
    # Its worker, the container's init and its keeper are the last (watcher/lost.py, docker.py).
    out = run(sandbox, "cat /proc/self/oom_score_adj; echo -1000 > /proc/self/oom_score_adj || echo refused")
    assert out.stdout == b"1000\nrefused\n", out.stderr


def test_root_is_read_only_and_only_work_and_tmp_are_writable(sandbox: DockerSandbox) -> None:
    script = (
        "for p in /usr/evil /etc/evil /evil /run/cutor/evil /bin/evil; do "
        "  if echo x > $p 2>/dev/null; then echo WROTE $p; else echo blocked $p; fi; done; "
        "echo x > /work/ok && echo x > /tmp/ok && echo x > /dev/shm/ok && echo writable"
    )
    out = run(sandbox, script)
    assert out.status == StageStatus.OK
    assert b"WROTE" not in out.stdout
    assert out.stdout.count(b"blocked") == 5 and out.stdout.endswith(b"writable\n")
    assert (sandbox.workdir / "ok").read_bytes() == b"x\n"


def test_container_settings_as_the_engine_reports_them(sandbox: DockerSandbox) -> None:
    assert run(sandbox, "true").status == StageStatus.OK
    (container_id,) = containers_of(sandbox)
    info = sandbox.api.inspect_container(container_id)
    host = info["HostConfig"]
    assert info["Config"]["User"] == f"{sandbox.slot.uid}:{sandbox.slot.gid}"
    assert (host["Init"], host["ReadonlyRootfs"], host["NetworkMode"]) == (True, True, "none")
    security = ["no-new-privileges", *sandbox.backend.layout.seccomp]  # the spool's seccomp profile (on by default)
    assert (host["CapDrop"], host["SecurityOpt"], host["LogConfig"]["Type"]) == (["ALL"], security, "none")
    assert len(security) == 2 and security[1].startswith("seccomp={")
    assert host["Memory"] == host["MemorySwap"] > 0 and host["PidsLimit"] > 0
    assert "size=33554432" in host["Tmpfs"]["/tmp"] and host["ShmSize"] == 32 * MiB
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert mounts["/work"]["RW"] and mounts["/work"]["Source"] == str(sandbox.slot.work)
    assert not mounts["/run/cutor"]["RW"] and mounts["/run/cutor"]["Source"] == str(sandbox.slot.io)


def test_a_pinned_slot_s_container_and_its_children_keep_to_its_cpu(backend: DockerBackend, state_dir: Path) -> None:
    """CPU pinning: the slot's CPU is the container's cpuset; a child cannot widen its affinity."""
    cpus = backend.cpus()
    pool = SlotPool(uid_base=UID_BASE, count=SLOTS, work_size=128 * MiB, state_dir=state_dir, cpus=cpus[-1:])
    slot = pool.acquire()
    cpu = slot.cpu
    box = backend.open(slot, "pinned")
    try:
        script = (
            "grep Cpus_allowed_list /proc/self/status | cut -f2; nproc; "
            "python3 -c 'import os; os.sched_setaffinity(0, range(os.cpu_count())); print(*os.sched_getaffinity(0))'"
        )
        out = run(box, script)
        (container_id,) = containers_of(box)
        host = box.api.inspect_container(container_id)["HostConfig"]
    finally:
        box.close()
        pool.release(slot)
    assert cpu == cpus[-1]
    assert out.status == StageStatus.OK, out
    assert out.stdout.decode().split() == [str(cpu), "1", str(cpu)]
    assert host["CpusetCpus"] == str(cpu)


def test_a_launcher_built_ahead_is_used(
    docker_image: str,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    pool: SlotPool,
) -> None:
    source = tmp_path / "launch.c"
    source.write_text(SOURCE)
    prebuilt = tmp_path / "prebuilt-launcher"
    subprocess.run(["cc", "-static", "-O2", "-o", str(prebuilt), str(source)], check=True)
    monkeypatch.setenv("CUTOR_SPOOL_LAUNCHER", str(prebuilt))
    try:
        backend = DockerBackend(config(docker_image), tmp_path / "state")
        # Bound from the state directory's tmpfs (no host path in the job's mountinfo), as a copy.
        assert backend.layout.launcher == tmp_path / "state" / "docker" / prebuilt.name
        assert backend.layout.launcher.read_bytes() == prebuilt.read_bytes()
        slot = pool.acquire()
        box = backend.open(slot, "prebuilt")
        try:
            assert run(box, "echo from the prebuilt launcher").stdout == b"from the prebuilt launcher\n"
        finally:
            box.close()
            pool.release(slot)
        monkeypatch.setenv("CUTOR_SPOOL_LAUNCHER", str(tmp_path / "missing"))
        with pytest.raises(SandboxError, match="CUTOR_SPOOL_LAUNCHER"):
            DockerBackend(config(docker_image), tmp_path / "state")
    finally:
        unmount_under(tmp_path / "state")


def test_a_remote_or_absent_engine_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="needs this host's engine through its unix socket"):
        DockerBackend(config("any:1", url="tcp://127.0.0.1:2375"), tmp_path)
    with pytest.raises(SandboxError, match="cannot reach the Docker engine"):
        DockerBackend(config("any:1", url=f"unix://{tmp_path}/no-engine.sock"), tmp_path)


def test_stage_files_are_read_only_under_run_cutor(sandbox: DockerSandbox) -> None:
    spec = StageSpec(name="run", command=("/bin/sh", "/run/cutor/script"), limits=LIMITS, files={"script": b"echo hi"})
    out = sandbox.run(spec)
    assert (out.status, out.stdout) == (StageStatus.OK, b"hi\n")
    assert b"Read-only" in run(sandbox, "echo x > /run/cutor/script").stderr


def test_no_network_unless_the_stage_asks(sandbox: DockerSandbox) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    port = server.getsockname()[1]
    try:
        script = (
            "cut -d: -f1 /proc/net/dev | tail -n +3 | tr -d ' ' | sort | tr '\\n' ' '; "
            f"python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), timeout=2)' "
            "2>/dev/null && echo CONNECTED || echo refused"
        )
        offline = run(sandbox, script)
        assert offline.stdout == b"lo refused\n", offline
        with pytest.raises(TimeoutError):
            server.accept()  # nothing reached the host's loopback
        online = run(sandbox, "cut -d: -f1 /proc/net/dev | tail -n +3 | tr -d ' ' | sort | tr '\\n' ' '", network=True)
        assert online.stdout.split() == [b"eth0", b"lo"], online  # the switch does something
        assert len(sandbox.containers) == 2  # a container per network setting
    finally:
        server.close()


def test_env_is_the_base_plus_the_stage_s(sandbox: DockerSandbox) -> None:
    out = run(sandbox, 'echo "$HOME $PATH $GREETING"; pwd', env={"GREETING": "hello"})
    assert out.stdout == b"/work /usr/local/bin:/usr/bin:/bin hello\n/work\n"


def test_nix_store_paths_are_mounted_read_only(sandbox: DockerSandbox, tmp_path: Path) -> None:
    store_path = tmp_path / "fake-store-path"
    store_path.mkdir()
    (store_path / "tool").write_text("from the store\n")
    out = run(
        sandbox, f"cat {store_path}/tool; echo x > {store_path}/evil || echo blocked", ro_binds=(str(store_path),)
    )
    assert out.stdout == b"from the store\nblocked\n", out
    assert not (store_path / "evil").exists()


def test_checker_never_shares_the_submission_s_container(sandbox: DockerSandbox) -> None:
    assert run(sandbox, "echo planted > /work/planted; echo x > /tmp/planted").status == StageStatus.OK
    checker = run(sandbox, "ls -A /work; ls -A /tmp; echo done", workdir="aux")
    assert checker.stdout == b"done\n"  # neither the submission's /work nor its /tmp
    assert len(containers_of(sandbox)) == 2
    assert run(sandbox, "cat /work/planted").stdout == b"planted\n"  # and the submission's is intact


# -- limits ----------------------------------------------------------------------------------


def test_cpu_loop_is_a_time_limit(sandbox: DockerSandbox) -> None:
    out = run(sandbox, "while :; do :; done")
    assert out.status == StageStatus.TIME_LIMIT
    # SIGXCPU (RLIMIT_CPU, tick-sampled) may come before the cgroup's precise counter reaches 1 s
    # when the host steals time from this VM: the lower bound is loose, the upper one is not.
    assert 0.5 <= out.cpu_time <= 1.3


def test_cpu_spread_over_four_processes_is_limited_in_total(sandbox: DockerSandbox) -> None:
    out = run(sandbox, "for i in 1 2 3 4; do (while :; do :; done) & done; wait")
    assert out.status == StageStatus.TIME_LIMIT
    assert 0.95 <= out.cpu_time <= 1.3  # RLIMIT_CPU alone, per process, would allow 4 s


def test_sleep_is_a_wall_time_limit(sandbox: DockerSandbox) -> None:
    out = run(sandbox, "sleep 100", replace(LIMITS, wall_time=1.0))
    assert out.status == StageStatus.WALL_TIME_LIMIT
    assert 1.0 <= out.wall_time < 3.0 and out.cpu_time < 0.5


def test_memory_limit_by_the_oom_counter(sandbox: DockerSandbox) -> None:
    out = run(sandbox, "python3 -c 'chunks = []\nwhile True: chunks.append(bytearray(16 << 20))'")
    assert out.status == StageStatus.MEMORY_LIMIT
    assert 100 * MiB <= out.memory <= 130 * MiB


def test_output_flood_is_cut_at_the_cap(sandbox: DockerSandbox) -> None:
    began = time.monotonic()
    out = run(sandbox, "yes flood", replace(LIMITS, wall_time=30.0, cpu_time=30.0))
    assert time.monotonic() - began < 10  # stopped by the cap, not by the 30 s wall limit
    assert out.status == StageStatus.OUTPUT_LIMIT
    assert len(out.stdout) == 64 * 1024 and out.stdout_truncated and out.stdout.startswith(b"flood\nflood\n")
    flood = run(sandbox, "yes flood >&2", replace(LIMITS, wall_time=30.0, cpu_time=30.0))
    assert (flood.status, len(flood.stderr), flood.stderr_truncated) == (StageStatus.OUTPUT_LIMIT, 64 * 1024, True)


def test_file_size_limit_signals_sigxfsz(sandbox: DockerSandbox) -> None:
    # `exec`: the program's own end is the stage's (a shell would report the signal as exit 153)
    out = run(sandbox, "exec head -c 10000000 /dev/zero > /work/big", replace(LIMITS, file_size=MiB))
    assert (out.status, out.signal) == (StageStatus.SIGNALED, 25)
    assert (sandbox.workdir / "big").stat().st_size == MiB


def test_fork_bomb_is_held_by_the_pids_limit(sandbox: DockerSandbox) -> None:
    counter = (
        "import os, time\nn = 0\ntry:\n    while n < 10000:\n        if os.fork() == 0:\n"
        "            time.sleep(30)\n            os._exit(0)\n        n += 1\nexcept OSError:\n    pass\nprint(n)"
    )
    out = sandbox.run(
        StageSpec(
            name="run", command=("python3", "/run/cutor/bomb.py"), limits=LIMITS, files={"bomb.py": counter.encode()}
        )
    )
    assert out.status == StageStatus.OK
    assert 1 <= int(out.stdout) < LIMITS.processes  # the job's own processes, the python one included
    bomb = run(sandbox, "bomb() { bomb | bomb & }; bomb; sleep 1; echo host fine")
    # The classic churns (forks fail, shells exit, others fork): on a busy host its CPU can reach
    # the 1 s limit before the main shell's `echo`, or the main shell's own fork for `sleep` can
    # fail ("Cannot fork", exit 2), or its "Cannot fork" messages fill the 64 KiB of output first
    # (seen once here). Whichever, it is held, and then gone.
    held = (StageStatus.OK, StageStatus.TIME_LIMIT, StageStatus.RUNTIME_ERROR, StageStatus.OUTPUT_LIMIT)
    assert bomb.status in held, bomb
    assert bomb.status != StageStatus.OK or bomb.stdout == b"host fine\n"
    assert leftovers(sandbox) == []  # the bombs are gone


def test_container_survives_a_killed_stage_and_runs_the_next(sandbox: DockerSandbox) -> None:
    assert run(sandbox, "echo first").stdout == b"first\n"
    first = containers_of(sandbox)
    killed = run(sandbox, "sleep 1000 & while :; do :; done")
    assert killed.status == StageStatus.TIME_LIMIT
    assert run(sandbox, "echo next").stdout == b"next\n"
    assert containers_of(sandbox) == first
    assert leftovers(sandbox) == []


def test_background_children_end_with_the_stage(sandbox: DockerSandbox) -> None:
    script = "setsid sh -c 'sleep 1000' </dev/null >/dev/null 2>&1 & (sh -c 'sleep 1000 &' &); echo left behind"
    out = run(sandbox, script, replace(LIMITS, wall_time=20.0))
    assert (out.status, out.stdout) == (StageStatus.OK, b"left behind\n")
    assert out.wall_time < 2.0  # not held open until the wall limit by the sleeper's stdout
    assert leftovers(sandbox) == []


def test_killing_the_keeper_costs_the_stage_not_the_sandbox(sandbox: DockerSandbox) -> None:
    assert run(sandbox, "true").status == StageStatus.OK
    before = containers_of(sandbox)
    out = run(sandbox, "kill -9 -1; sleep 1; echo unreachable")
    assert out.status == StageStatus.SIGNALED and out.stdout == b""
    after = run(sandbox, "echo next")
    assert after.stdout == b"next\n"
    assert containers_of(sandbox).isdisjoint(before)


def test_cancel_stops_the_stage_and_keeps_the_container(sandbox: DockerSandbox) -> None:
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    out = sandbox.run(sh("sleep 100", replace(LIMITS, wall_time=20.0)), cancel)
    assert out.status == StageStatus.INTERNAL_ERROR and "lease" in (out.message or "")
    assert out.wall_time < 5.0
    assert run(sandbox, "echo next").stdout == b"next\n"


# -- accounting ------------------------------------------------------------------------------

ALLOCATE = rb"""
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
    size_t size = strtoull(argv[1], 0, 10) << 20;
    char *p = malloc(size);
    memset(p, 1, size);
    return p[size - 1] == 1 ? 0 : 1;
}
"""
SPIN = rb"""
#include <time.h>
int main(void) {
    struct timespec t;
    do clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t); while (t.tv_sec < 1);
    return 0;
}
"""


def compile_c(box: DockerSandbox, name: str, source: bytes) -> None:
    spec = StageSpec(
        name="compile",
        command=("cc", "-O1", "-o", f"/work/{name}", f"/run/cutor/{name}.c"),
        limits=replace(LIMITS, cpu_time=30, wall_time=60, memory=512 * MiB),
        files={f"{name}.c": source},
    )
    out = box.run(spec)
    assert out.status == StageStatus.OK, out.stderr


def test_memory_is_the_stage_s_peak_not_the_runner_s(sandbox: DockerSandbox) -> None:
    compile_c(sandbox, "allocate", ALLOCATE)
    ballast = bytearray(300 * MiB)  # the runner itself is big: its size must not show
    ballast[::4096] = b"\1" * len(ballast[::4096])
    out = sandbox.run(
        StageSpec(name="run", command=("/work/allocate", "100"), limits=replace(LIMITS, memory=256 * MiB))
    )
    del ballast
    assert out.status == StageStatus.OK
    assert abs(out.memory - 100 * MiB) <= 5 * MiB, out.memory / MiB


def test_cpu_time_of_a_one_second_loop(sandbox: DockerSandbox) -> None:
    compile_c(sandbox, "spin", SPIN)
    out = sandbox.run(StageSpec(name="run", command=("/work/spin",), limits=replace(LIMITS, cpu_time=5, wall_time=10)))
    assert out.status == StageStatus.OK
    assert abs(out.cpu_time - 1.0) <= 0.05, out.cpu_time


# -- the backend's life ----------------------------------------------------------------------


def test_a_missing_image_is_a_clear_error(docker_image: str, state_dir: Path) -> None:  # noqa: F811
    with pytest.raises(SandboxError, match=r"no-such-image:1 .* is not on this host"):
        DockerBackend(config("no-such-image:1"), state_dir)


def test_sweep_removes_containers_of_dead_workers(backend: DockerBackend, pool: SlotPool) -> None:
    slot = pool.acquire()
    box = backend.open(slot, "dead-worker")
    engine = docker.APIClient(base_url=f"unix://{backend.socket}", version=backend.api_version)
    dead = False
    try:
        assert run(box, "true").status == StageStatus.OK
        (container_id,) = containers_of(box)
        assert backend.sweep(pool) == 0  # its slot is held: a live sandbox's container stays
        assert engine.inspect_container(container_id)["State"]["Running"]
        # The worker dies: its locks go with it (the slot's and the sandbox's alive lock), the
        # container stays. Leaving the alive lock open here made later tests that drew the same
        # uid fail at random.
        os.close(slot.lock_fd)
        os.close(box._alive)  # type: ignore[arg-type]  # simulating the death of the process holding it
        dead = True
        backend.forget(box)
        assert backend.sweep(pool) == 1
        with pytest.raises(docker.errors.NotFound):
            engine.inspect_container(container_id)
    finally:
        engine.close()
        if dead:
            box.api.close()
            slot.lock_fd = os.open("/dev/null", os.O_RDONLY)  # for release, which unmounts /work
        else:
            box.close()
        pool.release(slot)


DYING_WORKER = """
import sys, threading, time
from dataclasses import replace
from pathlib import Path
from cutor_spool.config import DEFAULT_LIMITS, SpoolConfig
from cutor_spool.limits import Limits
from cutor_spool.runner.docker import DockerBackend
from cutor_spool.runner.slots import SlotPool, processes_of
from cutor_spool.runner.stage import StageSpec

config = SpoolConfig.model_validate_json(sys.argv[1])
state = Path(sys.argv[2])
backend = DockerBackend(config, state)
pool = SlotPool(uid_base=config.sandbox.uid_base, count=config.sandbox.slots, work_size=2**27, state_dir=state)
slot = pool.acquire()
box = backend.open(slot, "dying")
limits = replace(Limits.from_spec(DEFAULT_LIMITS), wall_time=600, cpu_time=600)
spec = StageSpec(name="run", command=("/bin/sh", "-c", "sleep 1000"), limits=limits)
threading.Thread(target=box.run, args=(spec,), daemon=True).start()
while not box.containers or not box.stages:
    time.sleep(0.01)
time.sleep(0.5)
print(next(iter(box.containers.values())).id, slot.uid, flush=True)
time.sleep(1000)
"""


def test_a_dead_worker_s_containers_end_with_it(backend: DockerBackend, pool: SlotPool, state_dir: Path) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-c", DYING_WORKER, backend.config.model_dump_json(), str(state_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    engine = docker.APIClient(base_url=f"unix://{backend.socket}", version=backend.api_version)
    uid = ""
    try:
        assert worker.stdout is not None
        container_id, uid = worker.stdout.readline().split()
        assert engine.inspect_container(container_id)["State"]["Running"]
        assert any(processes_of(int(uid)))  # its keeper, init and the sleeping job
        worker.kill()  # SIGKILL: no clean-up of its own
        worker.wait()
        deadline = time.monotonic() + 20
        while engine.inspect_container(container_id)["State"]["Running"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not engine.inspect_container(container_id)["State"]["Running"]
        assert processes_of(int(uid)) == []  # the job went with its container
        assert backend.sweep(pool) >= 1  # and the stopped container is cleared away
        with pytest.raises(docker.errors.NotFound):
            engine.inspect_container(container_id)
    finally:
        engine.close()
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        for which in ("work", "aux") if uid else ():  # the dead worker's slot directories
            subprocess.run(["umount", "-l", str(state_dir / "slots" / uid / which)], capture_output=True)


def test_containers_are_removed_when_the_sandbox_closes(backend: DockerBackend, pool: SlotPool) -> None:
    slot = pool.acquire()
    box = backend.open(slot, "closing")
    try:
        run(box, "true")
        run(box, "true", workdir="aux")
        ids = containers_of(box)
        assert len(ids) == 2
    finally:
        box.close()
        pool.release(slot)
    engine = docker.APIClient(base_url=f"unix://{backend.socket}", version=backend.api_version)
    try:
        for container_id in ids:
            with pytest.raises(docker.errors.NotFound):
                engine.inspect_container(container_id)
    finally:
        engine.close()


# -- end to end ------------------------------------------------------------------------------


def test_executor_runs_a_submission_in_docker(
    spool: Path,
    executors: Any,
    tmp_path: Path,
    docker_image: str,  # noqa: F811
) -> None:
    write_config(
        spool, backend="docker", docker={"image": docker_image}, sandbox={"uid_base": UID_BASE + 100, "slots": 4}
    )
    program = (
        '#include <stdio.h>\nint main(void) { char s[64]; if (!fgets(s, 64, stdin)) return 1; printf("got %s", s); }\n'
    )
    sub = make_submission(
        tmp_path,
        "hello",
        {"compile": "cc -o hello hello.c", "run": "./hello && id -u", "stdin": "the input\n"},
        {"hello.c": program},
    )
    executor = executors(spool, "--state-dir", str(tmp_path / "state"))
    drop(spool, sub, "hello-docker")
    wait_done(spool, "hello-docker", timeout=120)
    status = result(spool, "hello-docker")
    assert (status["state"], status["outcome"]) == ("done", "ok"), executor.output()[-3000:]
    run_json = stage(spool, "hello-docker", "run")
    assert run_json["backend"] == "docker"
    assert run_json["stdout"] == f"got the input\n{status['sandbox_uid']}\n"
    assert stage(spool, "hello-docker", "compile")["status"] == "ok"
