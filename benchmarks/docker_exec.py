"""Per-stage overhead of the Docker backend: one exec in a long-lived container, against a bare
fork/exec of the same command and against the bubblewrap backend, side by side in one run.

Figures (medians over --count runs of `/bin/sh -c 'echo hi'`):
- bare fork/exec from Python on the host (the baseline);
- a raw exec through the docker SDK (`exec_create` + `exec_start`), no limits: the engine's cost;
- a whole Docker stage (`DockerSandbox.run`): cgroup limits and baselines, the launcher's rlimits,
  the capped attach stream, exit code and accounting; its overhead is this minus the bare exec;
- a whole bubblewrap stage, for comparison;
- a new container (a submission's first stage) over --containers sandboxes.

    sudo .venv/bin/python benchmarks/docker_exec.py [--count 100] [--image cutor-spool-sandbox:test]

Target: Docker stage overhead (median) under 80 ms. Needs root and a running engine
(scripts/dockerd.sh); builds the test image with tests/docker_image/build.sh when --image is the
test image.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from cutor_spool.config import DEFAULT_LIMITS, SpoolConfig
from cutor_spool.limits import Limits
from cutor_spool.runner.stage import StageSpec, StageStatus

ROOT = Path(__file__).resolve().parent.parent

TEST_IMAGE = "cutor-spool-sandbox:test"
COMMAND = ("/bin/sh", "-c", "echo hi")
UID_BASE = 64000  # away from the test suites' slots


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bare_exec_ms(argv: list[str], count: int) -> float:
    return median(timed(lambda: subprocess.run(argv, stdout=subprocess.DEVNULL, check=True), count))


def timed(fn: Callable[[], object], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def run(image: str, count: int, containers: int) -> dict[str, list[float] | float]:
    import docker

    from cutor_spool.runner.bwrap import BubblewrapBackend
    from cutor_spool.runner.docker import DockerBackend
    from cutor_spool.runner.slots import SlotPool

    state = Path(tempfile.mkdtemp(prefix="cutor-bench-docker-"))
    config = SpoolConfig.model_validate(
        {"docker": {"image": image}, "sandbox": {"uid_base": UID_BASE, "slots": 4, "tmp_size": "16MiB"}}
    )
    limits = replace(Limits.from_spec(DEFAULT_LIMITS), cpu_time=2.0, wall_time=5.0, memory=128 * 2**20)
    spec = StageSpec(name="run", command=COMMAND, limits=limits)
    figures: dict[str, list[float] | float] = {"bare": bare_exec_ms(list(COMMAND), count)}
    pool = SlotPool(uid_base=UID_BASE, count=4, work_size=64 * 2**20, state_dir=state)
    backend = DockerBackend(config, state)
    try:
        slot = pool.acquire()
        box = backend.open(slot, "bench")
        try:

            def stage() -> None:
                out = box.run(spec)
                assert out.status == StageStatus.OK and out.stdout == b"hi\n", out

            stage()  # the container
            container_id = next(iter(box.containers.values())).id
            engine = docker.APIClient(base_url=f"unix://{backend.socket}", version=backend.api_version)

            def raw() -> None:
                exec_id = engine.exec_create(container_id, list(COMMAND), user=f"{slot.uid}:{slot.gid}")["Id"]
                assert engine.exec_start(exec_id) == b"hi\n"

            for _ in range(5):
                raw()
                stage()
            figures["raw_exec"] = timed(raw, count)
            figures["docker_stage"] = timed(stage, count)
            engine.close()
        finally:
            box.close()
            pool.release(slot)

        def first_stage() -> None:
            held = pool.acquire()
            fresh = backend.open(held, "bench-new")
            try:
                assert fresh.run(spec).status == StageStatus.OK
            finally:
                fresh.close()
                pool.release(held)

        figures["new_container"] = timed(first_stage, containers)

        if shutil.which("bwrap"):
            bwrap = BubblewrapBackend(state_dir=state, uid_base=UID_BASE, slots=4, tmp_size=16 * 2**20)
            slot = pool.acquire()
            try:
                sandbox = bwrap.open(slot, "bench")
                for _ in range(5):
                    sandbox.run(spec)
                figures["bwrap_stage"] = timed(lambda: sandbox.run(spec), count)
            finally:
                pool.release(slot)
    finally:
        backend.close()
        shutil.rmtree(state, ignore_errors=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--containers", type=int, default=10)
    parser.add_argument("--image", default=TEST_IMAGE)
    args = parser.parse_args()
    subprocess.run(["bash", str(ROOT / "scripts" / "dockerd.sh")], check=True)
    if args.image == TEST_IMAGE:
        subprocess.run(["bash", str(ROOT / "tests" / "docker_image" / "build.sh"), TEST_IMAGE], check=True)
    f = run(args.image, args.count, args.containers)
    bare = f["bare"]
    assert isinstance(bare, float)
    print(f"bare fork/exec of {' '.join(COMMAND)!r:28s} {bare:8.1f} ms")
    rows = [
        ("raw_exec", "docker SDK exec_create + exec_start"),
        ("docker_stage", "Docker backend stage (a warm container)"),
        ("bwrap_stage", "bubblewrap backend stage"),
        ("new_container", "Docker: a new container + its first stage"),
    ]
    for key, label in rows:
        samples = f.get(key)
        if not isinstance(samples, list):
            continue
        med, p95 = median(samples), percentile(samples, 0.95)
        extra = f"overhead {med - bare:7.1f} ms  ({med / bare:.1f}x bare)"
        print(f"{label:44s} median {med:7.1f} ms  p95 {p95:7.1f} ms  {extra}")
    stage_samples = f["docker_stage"]
    assert isinstance(stage_samples, list)
    overhead = median(stage_samples) - bare
    print(f"target: Docker stage overhead under 80 ms: {'met' if overhead < 80 else 'MISSED'} ({overhead:.1f} ms)")


if __name__ == "__main__":
    main()
