"""Pilot executors under Slurm (`cutor-spool slurm --submit`) on a real single-node cluster
(tests/slurm.py: munged, slurmctld, slurmd on the loopback), against one executor started directly.

For 1, 2 and 4 pilots (one slot and one CPU each; the node declares 4 CPUs so that 4 pilots run
at once on a 2-core machine), N trivial submissions are dropped first, then the array is
submitted. Figures:

- sbatch to first claim: from running `cutor-spool slurm --submit` to the first entry in active/
  (Slurm's scheduling, the job's start, Python's and the executor's start-up);
- throughput: N / (last done/<id> - sbatch), the pilots' start included, and N / (last done -
  first claim), the steady rate;
- the pilots' exit: from the last done/<id> to the array leaving squeue (their --exit-when-idle).

Baseline, in the same process and on the same kind of spool: one plain `cutor-spool executor`
(--concurrency 1, then 2) started directly, timed the same way from its Popen. Every run is
repeated `--rounds` times, the runs of a round one after the other; the table gives medians.

    sudo .venv/bin/python benchmarks/slurm.py [--count 200] [--pilots 1,2,4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

from _common import ROOT, DoneWatch, check_done, drop, make_source, median, scratch_spool, stop

from tests.slurm import PARTITION, Slurm, cluster

TRIVIAL = {"run": "echo hi"}
IDLE = "2s"


class FirstClaim:
    """The time of the first entry in active/ (inotify: no polling against the executors)."""

    def __init__(self, active: Path) -> None:
        from cutor_spool.watcher.notify import DirectoryWatch

        self.at: float | None = None
        self.event = threading.Event()
        self.watch = DirectoryWatch([active], self._on)
        self.watch.start()

    def _on(self, _directory: Path, _name: str) -> None:
        if self.at is None:
            self.at = time.perf_counter()
            self.event.set()

    def wait(self, timeout: float = 120) -> float:
        if not self.event.wait(timeout):
            raise TimeoutError("no claim")
        assert self.at is not None
        return self.at

    def close(self) -> None:
        self.watch.stop()


def one_run(count: int, start: object, finish: object) -> dict[str, float]:
    """Drops `count` trivial submissions, calls `start(spool)` (which returns a handle), times the
    first claim and the last done/<id>, then `finish(handle)`, timed too."""
    with scratch_spool(Path("/run")) as spool:
        spool.parent.chmod(0o755)
        source = make_source(spool.parent, "trivial", TRIVIAL)
        names = [f"s-{i:05d}" for i in range(count)]
        for name in names:
            drop(spool, source, name)
        first, done = FirstClaim(spool / "active"), DoneWatch(spool / "done")
        try:
            t0 = time.perf_counter()
            handle = start(spool)  # type: ignore[operator]
            claimed = first.wait()
            last = done.wait_all(names)
            finish(handle)  # type: ignore[operator]
            left = time.perf_counter()
            check_done(spool, [names[0], names[-1]])
        finally:
            first.close()
            done.close()
    return {
        "first_claim": claimed - t0,
        "rate_total": count / (last - t0),
        "rate_steady": count / (last - claimed),
        "exit": left - last,
    }


def pilots_run(slurm: Slurm, count: int, pilots: int) -> dict[str, float]:
    def start(spool: Path) -> str:
        argv = [sys.executable, "-m", "cutor_spool", "--spool", str(spool), "slurm", "--submit"]
        argv += ["--pilots", str(pilots), "--concurrency", "1", "--cpus-per-task", "1", "--exit-when-idle", IDLE]
        argv += ["--partition", PARTITION, "--output", str(spool.parent / "pilot-%A_%a.out")]
        argv += ["--bin", shlex.join([sys.executable, "-m", "cutor_spool"])]
        return subprocess.run(argv, env=slurm.env, cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    def finish(job_id: str) -> None:
        while any(task.split("_")[0] == job_id for task in slurm.squeue()):
            time.sleep(0.1)
        states = slurm.job_states(job_id)
        if any(state != ("COMPLETED", "0:0") for state in states.values()):
            raise RuntimeError(f"pilots of job {job_id} did not end right: {states}")

    return one_run(count, start, finish)


def direct_run(count: int, concurrency: int) -> dict[str, float]:
    def start(spool: Path) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "cutor_spool", "--spool", str(spool), "-q", "executor"]
        argv += ["--concurrency", str(concurrency), "--exit-when-idle", IDLE]
        return subprocess.Popen(argv, cwd=ROOT)

    def finish(proc: subprocess.Popen[bytes]) -> None:
        stop(proc, patience=60)
        if proc.returncode != 0:
            raise RuntimeError(f"the executor exited {proc.returncode}")

    return one_run(count, start, finish)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--pilots", default="1,2,4")
    parser.add_argument("--rounds", type=int, default=3, help="Every run this many times, interleaved; medians.")
    args = parser.parse_args()
    counts = [int(n) for n in args.pilots.split(",")]
    runs: dict[str, list[dict[str, float]]] = {}
    generator = cluster(cpus=max(counts))
    slurm = next(generator)
    try:
        for round_ in range(args.rounds):  # interleaved: load from elsewhere weighs on all alike
            for concurrency in (1, 2):
                print(f"round {round_ + 1}: one executor, --concurrency {concurrency}", file=sys.stderr)
                name = f"executor started directly, {concurrency} slot(s)"
                runs.setdefault(name, []).append(direct_run(args.count, concurrency))
            for pilots in counts:
                print(f"round {round_ + 1}: {pilots} pilot(s)", file=sys.stderr)
                name = f"Slurm array, {pilots} pilot(s) x 1 slot"
                runs.setdefault(name, []).append(pilots_run(slurm, args.count, pilots))
    finally:
        generator.close()
    print(
        f"{args.count} trivial submissions (`run: echo hi`), bubblewrap, local disk, --exit-when-idle {IDLE}; "
        f"median of {args.rounds} interleaved round(s)"
    )
    print("| run | start to first claim | subs/s, start to last done | subs/s, first claim to last done | exit after |")
    print("| --- | --- | --- | --- | --- |")
    for name, samples in runs.items():
        f = {key: median([sample[key] for sample in samples]) for key in samples[0]}
        rates = f"{f['rate_total']:.1f} | {f['rate_steady']:.1f}"
        print(f"| {name} | {f['first_claim']:.2f} s | {rates} | {f['exit']:.2f} s |")


if __name__ == "__main__":
    main()
