"""Drop-to-final latency and throughput of the spool pipeline, bubblewrap backend, local disk.

Latency: one trivial submission at a time (`run: echo hi`), from the rename into incoming/ to the
appearance of done/<id>; median and p95, with inotify and with --poll. Throughput: N submissions
dropped at once, with 1 and 2 executors. Baseline in the same run: a bare fork/exec of the same
trivial command from Python.

    sudo .venv/bin/python benchmarks/latency.py [--count 200] [--throughput 200]
"""

from __future__ import annotations

import argparse
import time

from _common import DoneWatch, bare_exec_ms, drop, executors, make_source, median, percentile, scratch_spool

TRIVIAL = {"run": "echo hi"}


def latency(count: int, *, poll: bool) -> list[float]:
    with scratch_spool() as spool:
        source = make_source(spool.parent, "trivial", TRIVIAL)
        watch = DoneWatch(spool / "done")
        mode = ["--poll"] if poll else ["--inotify"]
        with executors(spool, 1, "--concurrency", "1", *mode):
            for i in range(5):  # warm-up
                drop(spool, source, f"warm-{i}")
                watch.wait(f"warm-{i}")
            samples = []
            for i in range(count):
                name = f"lat-{i:05d}"
                start = time.perf_counter()
                drop(spool, source, name)
                samples.append((watch.wait(name) - start) * 1000)
        watch.close()
        return samples


def throughput(count: int, workers: int, concurrency: int = 2) -> float:
    with scratch_spool() as spool:
        source = make_source(spool.parent, "trivial", TRIVIAL)
        watch = DoneWatch(spool / "done")
        with executors(spool, workers, "--concurrency", str(concurrency)):
            names = [f"tp-{i:05d}" for i in range(count)]
            start = time.perf_counter()
            for name in names:
                drop(spool, source, name)
            end = watch.wait_all(names)
        watch.close()
        return count / (end - start)


def run(count: int, tp_count: int) -> dict[str, float]:
    bare = bare_exec_ms(["/bin/sh", "-c", "echo hi"])
    figures: dict[str, float] = {"bare_exec_ms": bare}
    for poll in (False, True):
        samples = latency(count, poll=poll)
        key = "poll" if poll else "inotify"
        figures[f"latency_{key}_median_ms"] = median(samples)
        figures[f"latency_{key}_p95_ms"] = percentile(samples, 0.95)
    for workers in (1, 2):
        figures[f"throughput_{workers}_executors_per_s"] = throughput(tp_count, workers)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--throughput", type=int, default=200)
    args = parser.parse_args()
    f = run(args.count, args.throughput)
    print(f"bare fork/exec of the same command     {f['bare_exec_ms']:8.1f} ms")
    for key in ("inotify", "poll"):
        med, p95 = f[f"latency_{key}_median_ms"], f[f"latency_{key}_p95_ms"]
        print(
            f"drop-to-final, {key:8s} median / p95 {med:8.1f} / {p95:6.1f} ms   ({med / f['bare_exec_ms']:.1f}x bare)"
        )
    print("target: inotify median under 50 ms")
    for workers in (1, 2):
        rate = f[f"throughput_{workers}_executors_per_s"]
        print(f"throughput, {workers} executor(s) x 2 slots   {rate:8.1f} submissions/s")


if __name__ == "__main__":
    main()
