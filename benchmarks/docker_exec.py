"""Per-stage overhead of the Docker backend: one exec in a long-lived container, against a bare
fork/exec of the same command and against the bubblewrap backend, side by side in one run.

Figures (medians over --count rounds of `/bin/sh -c 'echo hi'`, the variants interleaved round by
round so that load from elsewhere weighs on all alike; the bubblewrap stage and the Docker
variants in separate rounds, each set with its own bare fork/exec, because Docker's engine goes on
working after an exec returns and what runs next pays for it: `run`):
- bare fork/exec from Python on the host (the baseline), its output sent to /dev/null;
- the same bare fork/exec capturing stdout and stderr through pipes, as a stage returns them to
  its caller: issue 18's unit for the warm stage (at most 4.4x, isolate's warm box);
- a raw exec through the docker SDK (`exec_create` + `exec_start`), no limits: the engine's cost;
- a whole Docker stage (`DockerSandbox.run`): cgroup limits and baselines, the launcher's rlimits,
  the capped attach stream, exit code and accounting; its overhead is this minus the bare exec;
- a whole bubblewrap stage, for comparison;
- a new container (a submission's first stage) over --containers sandboxes.

    sudo .venv/bin/python benchmarks/docker_exec.py [--count 100] [--image cutor-spool-sandbox:test]

Target: Docker stage overhead (median) under 80 ms. Needs root and a running engine
(scripts/dockerd.sh); builds the test image with tests/docker_image/build.sh when --image is the
test image. Without an engine (`run(None, ...)`) only the bare exec and bubblewrap are measured.

Also here, for the other scripts: `docker run --rm IMAGE CMD` through the CLI, the baseline a user
would otherwise pick (`docker_run`, `docker_run_rate`), and `start_engine`.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from _common import ROOT, median, percentile

from cutor_spool.config import DEFAULT_LIMITS, SpoolConfig
from cutor_spool.limits import Limits
from cutor_spool.runner.stage import StageOutput, StageSpec, StageStatus

TEST_IMAGE = "cutor-spool-sandbox:test"
COMMAND = ("/bin/sh", "-c", "echo hi")
UID_BASE = 64000  # away from the test suites' slots


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def interleaved(variants: dict[str, Callable[[], object]], count: int) -> dict[str, list[float]]:
    """Each variant once per round, `count` rounds: load from elsewhere weighs on all alike."""
    for fn in variants.values():  # warm-up
        for _ in range(5):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(count):
        for name, fn in variants.items():
            samples[name].append(timed(fn))
    return samples


def start_engine(image: str = TEST_IMAGE) -> str | None:
    """Starts the engine (scripts/dockerd.sh) and builds the test image; None when both are
    ready, else why not (the caller skips its Docker figures with that note)."""
    if shutil.which("docker") is None or shutil.which("dockerd") is None:
        return "Docker is not installed"
    engine = subprocess.run(["bash", str(ROOT / "scripts" / "dockerd.sh")], capture_output=True, text=True)
    if engine.returncode != 0:
        return f"the Docker engine did not start: {engine.stderr.strip()[-200:]}"
    if image == TEST_IMAGE:
        build = subprocess.run(
            ["bash", str(ROOT / "tests" / "docker_image" / "build.sh"), TEST_IMAGE], capture_output=True, text=True
        )
        if build.returncode != 0:
            return f"the test image did not build: {build.stderr.strip()[-200:]}"
    return None


def docker_run(image: str, command: Sequence[str]) -> None:
    """What a user without a spool would run: a fresh container per program, through the CLI."""
    out = subprocess.run(["docker", "run", "--rm", "--network", "none", image, *command], capture_output=True)
    assert out.returncode == 0 and out.stdout == b"hi\n", out


def docker_run_rate(image: str, command: Sequence[str], count: int, parallel: int = 2) -> float:
    """Runs per second of `docker run --rm`, `parallel` at a time (as `xargs -P` would)."""
    todo = iter(range(count))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if next(todo, None) is None:
                    return
            docker_run(image, command)

    threads = [threading.Thread(target=worker) for _ in range(parallel)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return count / (time.perf_counter() - start)


def run(image: str | None, count: int, containers: int) -> dict[str, list[float]]:
    """Samples (ms) per variant: the bubblewrap stage and its bare fork/execs ("bare",
    "bare_captured") in rounds of their own, then, with an image (an engine up), the Docker
    variants and theirs ("docker_bare"). Not in the same rounds: the engine goes on working after
    an exec returns, and what runs next pays for it (a bare fork/exec right after a Docker stage
    0.98-1.0 ms against 0.70, the warm bubblewrap stage 3.6 against 2.6-2.9 ms, 2026-12-06)."""
    figures = run_bwrap_only(count) if shutil.which("bwrap") else {}
    if image is not None:
        figures.update(run_with_docker(image, count, containers))
    return figures


def run_bwrap_only(count: int) -> dict[str, list[float]]:
    with bwrap_stage() as stage:
        return interleaved({"bare": bare, "bare_captured": bare_captured, "bwrap_stage": stage}, count)


@contextmanager
def bwrap_stage() -> Iterator[Callable[[], None]]:
    """Runs COMMAND as the product's bubblewrap stage (on a warm slot where the host allows) in a
    slot this process holds, in a scratch state directory, checked for its output each time;
    everything is released and removed afterwards. Also `latency.py`'s warm-stage baseline."""
    from cutor_spool.runner.bwrap import BubblewrapBackend
    from cutor_spool.runner.slots import SlotPool

    state = state_dir("cutor-bench-bwrap-")
    spec = StageSpec(name="run", command=COMMAND, limits=bench_limits())
    pool = SlotPool(uid_base=UID_BASE, count=4, work_size=64 * 2**20, state_dir=state)
    bwrap = BubblewrapBackend(state_dir=state, uid_base=UID_BASE, slots=4, tmp_size=16 * 2**20)
    slot = pool.acquire()
    sandbox = bwrap.open(slot, "bench")
    try:
        yield lambda: checked(sandbox.run(spec))
    finally:
        sandbox.close()
        pool.release(slot)
        bwrap.close()
        remove_state(state)


def state_dir(prefix: str) -> Path:
    """A scratch state directory the slot uids can traverse, as /run/cutor-spool is: bwrap
    binds the sandbox's /etc from it after dropping to the slot's uid (mkdtemp's 0700 made every
    bubblewrap stage here fail to start, and be timed as if it had run)."""
    state = Path(tempfile.mkdtemp(prefix=prefix))
    state.chmod(0o711)
    return state


def remove_state(state: Path) -> None:
    """Unmounts what the backends mounted in a scratch state directory (the tmpfs of its /etc or
    of the files containers bind), then removes it."""
    with open("/proc/self/mounts", encoding="utf-8") as fh:
        points = [line.split()[1] for line in fh if line.split()[1].startswith(f"{state}/")]
    for point in sorted(points, reverse=True):
        subprocess.run(["umount", "-l", point], check=False)
    shutil.rmtree(state, ignore_errors=True)


def checked(out: StageOutput) -> None:
    assert out.status == StageStatus.OK and out.stdout == b"hi\n", out


def bare() -> None:
    subprocess.run(COMMAND, stdout=subprocess.DEVNULL, check=True)


def bare_captured() -> None:
    """The bare fork/exec that returns the output, as a stage does (`stage_floor.py`'s bare)."""
    done = subprocess.run(COMMAND, capture_output=True, check=True)
    assert done.stdout == b"hi\n", done


def bench_limits() -> Limits:
    return replace(Limits.from_spec(DEFAULT_LIMITS), cpu_time=2.0, wall_time=5.0, memory=128 * 2**20)


def run_with_docker(image: str, count: int, containers: int) -> dict[str, list[float]]:
    import docker

    from cutor_spool.runner.docker import DockerBackend
    from cutor_spool.runner.slots import SlotPool

    state = state_dir("cutor-bench-docker-")
    config = SpoolConfig.model_validate(
        {"docker": {"image": image}, "sandbox": {"uid_base": UID_BASE, "slots": 4, "tmp_size": "16MiB"}}
    )
    spec = StageSpec(name="run", command=COMMAND, limits=bench_limits())
    pool = SlotPool(uid_base=UID_BASE, count=4, work_size=64 * 2**20, state_dir=state)
    backend = DockerBackend(config, state)
    engine = docker.APIClient(base_url=f"unix://{backend.socket}", version=backend.api_version)
    slot = pool.acquire()
    box = backend.open(slot, "bench")
    try:

        def stage() -> None:
            checked(box.run(spec))

        stage()  # makes the container
        container_id = next(iter(box.containers.values())).id

        def raw() -> None:
            exec_id = engine.exec_create(container_id, list(COMMAND), user=f"{slot.uid}:{slot.gid}")["Id"]
            assert engine.exec_start(exec_id) == b"hi\n"

        figures = interleaved({"docker_bare": bare, "raw_exec": raw, "docker_stage": stage}, count)
    finally:
        box.close()
        engine.close()
        pool.release(slot)

    def first_stage() -> None:
        held = pool.acquire()
        fresh = backend.open(held, "bench-new")
        try:
            assert fresh.run(spec).status == StageStatus.OK
        finally:
            fresh.close()
            pool.release(held)

    try:
        figures["new_container"] = [timed(first_stage) for _ in range(containers)]
    finally:
        backend.close()
        remove_state(state)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--containers", type=int, default=10)
    parser.add_argument("--image", default=TEST_IMAGE)
    parser.add_argument("--docker-runs", type=int, default=20, help="docker run --rm of the same command")
    args = parser.parse_args()
    problem = start_engine(args.image)
    if problem:
        raise SystemExit(problem)
    f = run(args.image, args.count, args.containers)
    f["docker_run"] = [timed(lambda: docker_run(args.image, COMMAND)) for _ in range(args.docker_runs)]
    for of, rounds in (("bare", "the bubblewrap rounds"), ("docker_bare", "the Docker rounds")):
        if of in f:
            print(f"bare fork/exec of {' '.join(COMMAND)!r:28s} {median(f[of]):8.1f} ms  ({rounds})")
    rows = [
        ("bwrap_stage", "bubblewrap backend stage", "bare"),
        ("raw_exec", "docker SDK exec_create + exec_start", "docker_bare"),
        ("docker_stage", "Docker backend stage (a warm container)", "docker_bare"),
        ("new_container", "Docker: a new container + its first stage", "docker_bare"),
        ("docker_run", "docker run --rm (the CLI, a container per run)", "docker_bare"),
    ]
    for key, label, of in rows:
        if key not in f:
            continue
        bare, med, p95 = median(f[of]), median(f[key]), percentile(f[key], 0.95)
        extra = f"overhead {med - bare:7.1f} ms  ({med / bare:.1f}x bare)"
        print(f"{label:44s} median {med:7.1f} ms  p95 {p95:7.1f} ms  {extra}")
    bare = median(f["docker_bare"])
    overhead = median(f["docker_stage"]) - bare
    print(f"target: Docker stage overhead under 80 ms: {'met' if overhead < 80 else 'MISSED'} ({overhead:.1f} ms)")
    print(f"ours on top of the engine's exec: {median(f['docker_stage']) - median(f['raw_exec']):.1f} ms")
    captured, stage = median(f["bare_captured"]), median(f["bwrap_stage"])
    print(
        f"bubblewrap stage against a bare fork/exec capturing its output ({captured:.2f} ms): "
        f"{stage / captured:.2f}x   (issue 18: at most 4.4x)"
    )


if __name__ == "__main__":
    main()
