"""Drop-to-final latency and throughput of the spool pipeline, bubblewrap backend, local disk.

Latency: one trivial submission at a time (`run: echo hi`), from the rename into incoming/ to the
appearance of done/<id>; median and p95, with inotify and with --poll, and with inotify after
the executor was left idle for 200 ms before each drop (`idle`: how most submissions reach a
judge or a function behind the gateway; fewer drops, a quarter of --count). Throughput: N submissions
dropped at once, with 1 and 2 executors (2 slots each).

Baselines, in the same run: a bare fork/exec of the same command from Python, the product's own
stage of it on a warm slot held by this script (stage_floor.py's "warm slot" row: the unit of
issue 18's target for drop-to-final, at most 2x the stage at the median and 4x at p95), and
(when a Docker engine is up) `docker run --rm IMAGE /bin/sh -c 'echo hi'`, the command a user
would otherwise run. Each is timed between the latency samples of a round, one of each per
round, so that load from elsewhere weighs on all alike: the bare fork/exec and the stage in the
inotify round, `docker run` in the polling round. Docker's engine goes on working after a `docker
run` returns (its shim and daemon tidy up on both cores), and what runs next pays for it: a
bare fork/exec timed right after a Docker exec took 0.98-1.0 ms against 0.70 ms, and the warm
stage 3.6 against 2.6-2.9 ms (2026-12-06, `docker_exec.py`'s variants in two orders); so
`docker run` stays out of the round that gives issue 18's ratio, and in the polling round its
aftermath is lost in the poll's 0-100 ms. For throughput, `docker run` two at a time (one per
core).

    sudo .venv/bin/python benchmarks/latency.py [--count 200] [--throughput 1000] [--no-docker]
"""

from __future__ import annotations

import argparse
import subprocess
import time
from collections.abc import Callable

from _common import (
    POLL_INTERVAL,
    TRIVIAL,
    DoneWatch,
    check_done,
    drop,
    executors,
    make_source,
    median,
    one_at_a_time,
    percentile,
    scratch_spool,
)

COMMAND = ["/bin/sh", "-c", "echo hi"]


def bare_exec() -> None:
    subprocess.run(COMMAND, stdout=subprocess.DEVNULL, check=True)


IDLE = 0.2  # seconds the executor is left idle before each drop of the `idle` round


def latency(
    count: int, *, poll: bool, baselines: dict[str, Callable[[], object]] | None = None, gap: float = 0.0
) -> dict[str, list[float]]:
    """Milliseconds from drop to done/, under "spool"; each baseline timed once per round;
    `gap`: seconds of idleness before each drop."""
    mode, jitter = ("--poll", POLL_INTERVAL) if poll else ("--inotify", 0.0)
    return one_at_a_time(count, mode=mode, baselines=baselines, gap=gap, jitter=jitter)[0]


def throughput(count: int, workers: int, concurrency: int = 2) -> float:
    """Submissions per second, from the first drop to the last done/<id>."""
    with scratch_spool() as spool:
        source = make_source(spool.parent, "trivial", TRIVIAL)
        watch = DoneWatch(spool / "done")
        try:
            with executors(spool, workers, "--concurrency", str(concurrency)):
                names = [f"tp-{i:05d}" for i in range(count)]
                start = time.perf_counter()
                for name in names:
                    drop(spool, source, name)
                end = watch.wait_all(names)
            check_done(spool, [names[0], names[-1]])
        finally:
            watch.close()
        return count / (end - start)


def run(count: int, tp_count: int, image: str | None = None, docker_runs: int = 40) -> dict[str, float]:
    """Every figure of this script; the `docker_run*` ones only with an image (engine up)."""
    from docker_exec import bwrap_stage, docker_run, docker_run_rate

    figures: dict[str, float] = {}
    baselines: dict[str, Callable[[], object]] = {"bare": bare_exec}
    with bwrap_stage() as stage:  # the stage only beside the inotify round: its ratio is issue 18's
        _figures("inotify", latency(count, poll=False, baselines={**baselines, "stage": stage}), figures)
    if image is not None:  # not beside the inotify round: Docker's aftermath lands on what runs next
        baselines["docker_run"] = lambda: docker_run(image, COMMAND)
    _figures("poll", latency(count, poll=True, baselines=baselines), figures)
    idle = latency(max(5, count // 4), poll=False, gap=IDLE)["spool"]
    figures["idle.spool.median"], figures["idle.spool.p95"] = median(idle), percentile(idle, 0.95)
    for workers in (1, 2):
        figures[f"throughput.{workers}"] = throughput(tp_count, workers)
    if image is not None:
        figures["throughput.docker_run"] = docker_run_rate(image, COMMAND, docker_runs, parallel=2)
    return figures


def _figures(key: str, samples: dict[str, list[float]], figures: dict[str, float]) -> None:
    for name, values in samples.items():
        figures[f"{key}.{name}.median"] = median(values)
        figures[f"{key}.{name}.p95"] = percentile(values, 0.95)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--throughput", type=int, default=1000)
    parser.add_argument("--docker-runs", type=int, default=40, help="docker run --rm, two at a time")
    parser.add_argument("--no-docker", action="store_true", help="no docker run baseline")
    args = parser.parse_args()
    from docker_exec import TEST_IMAGE, start_engine

    image = None
    if not args.no_docker:
        problem = start_engine(TEST_IMAGE)
        if problem:
            print(f"no docker run baseline: {problem}")
        else:
            image = TEST_IMAGE
    f = run(args.count, args.throughput, image, args.docker_runs)
    for key in ("inotify", "poll"):
        bare, docker = f[f"{key}.bare.median"], f.get("poll.docker_run.median")
        med, p95 = f[f"{key}.spool.median"], f[f"{key}.spool.p95"]
        line = f"drop-to-final, {key:8s} median / p95 {med:8.1f} / {p95:6.1f} ms   "
        line += f"({med / bare:.1f}x bare {bare:.1f} ms"
        if docker is not None:
            line += f"; {med / docker:.2f}x docker run {docker:.1f} ms"
        print(line + ")")
    stage, med, p95 = f["inotify.stage.median"], f["inotify.spool.median"], f["inotify.spool.p95"]
    print(
        f"drop-to-final, inotify, against the warm stage ({stage:.2f} ms, same rounds): median "
        f"{med / stage:.2f}x, p95 {p95 / stage:.2f}x   (issue 18: at most 2x and 4x)"
    )
    med, p95, back = f["idle.spool.median"], f["idle.spool.p95"], f["inotify.spool.median"]
    print(
        f"drop-to-final, inotify, after {IDLE * 1000:.0f} ms idle: median / p95 {med:6.1f} / {p95:6.1f} ms"
        f"   ({med / back:.1f}x back to back)"
    )
    print("target: inotify median under 50 ms")
    for workers in (1, 2):
        rate = f[f"throughput.{workers}"]
        print(f"throughput, {workers} executor(s) x 2 slots   {rate:8.1f} submissions/s")
    if "throughput.docker_run" in f:
        print(f"docker run --rm, two at a time            {f['throughput.docker_run']:8.1f} runs/s")


if __name__ == "__main__":
    main()
