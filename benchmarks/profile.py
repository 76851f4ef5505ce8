"""Where the time of one trivial submission goes, from drop to commit (issue 18's "measure first").

One executor (`--concurrency 1 --inotify`, bubblewrap) runs `echo hi` submissions dropped one at a
time. Three views of the same kind of run, each in its own round so that no tool weighs on the
others' figures:

- **wall**: milliseconds from the rename into incoming/ to done/<id> (median, p95), beside a bare
  fork/exec of `sh -c 'echo hi'` timed in the same rounds;
- **phases** (needs `py-spy`, `pip install py-spy`, or `--py-spy PATH`): py-spy samples the
  executor's work thread, idle included, and each sample is charged to the innermost phase of
  the pipeline on its stack (the table below names them by function), as milliseconds per
  submission;
- **syscalls** (needs `strace`): `strace -c -f` on the executor and everything it starts, as calls
  per submission (the stage's own bwrap, launcher and shell included).

    sudo .venv/bin/python benchmarks/profile.py [--count 300] [--py-spy PATH] [--no-strace]
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import tempfile
from pathlib import Path

from _common import median, one_at_a_time, percentile

COMMAND = ["/bin/sh", "-c", "echo hi"]
RATE = 250  # py-spy samples per second (--nonblocking: it never stops the executor)

# (phase, the function whose frame marks it): a sample goes to the LAST phase of this list whose
# function is on its stack, so the inner ones (the stage's wait) win over the outer (the handler).
PHASES = [
    ("waiting for work (inotify, finder)", "Finder.take"),
    ("claim (rename, lease, custody)", "SpoolQueue.claim"),
    ("handling (outside the phases below)", "Executor.handle"),
    ("read and check submission.yaml", "read_submission"),
    ("slot: acquire (locks, tmpfs, reap)", "SlotPool.acquire"),
    ("slot: release (unmounts)", "SlotPool.release"),
    ("stage: set up (cgroup, files, Popen)", "BwrapSandbox._start"),
    ("stage: running (bwrap, launcher, sh)", "Supervisor.run"),
    ("stage: conclude (cgroup figures, kill)", "BwrapStage._conclude"),
    ("stage: live output thread", "LiveOutput.start"),
    ("stage: live output thread", "LiveOutput.close"),
    ("write stage result (run.json)", "Reporter.stage"),
    ("write status.json (transitions)", "Reporter.transition"),
    ("commit (rename into done/)", "Claim.commit"),
]


def bare_exec() -> None:
    subprocess.run(COMMAND, stdout=subprocess.DEVNULL, check=True)


def _round(count: int, tool: list[str] | None) -> tuple[list[float], list[float], float]:
    """Runs `count` trivial submissions one at a time; with `tool` (a command that takes the
    executor's pid as its last argument) attached to the executor while they run. Returns the
    drop-to-final and bare fork/exec samples (ms) and the seconds the counted part took."""
    samples, elapsed = one_at_a_time(count, baselines={"bare": bare_exec}, tool=tool)
    return samples["spool"], samples["bare"], elapsed


def phases(spy_file: Path, count: int, seconds: float) -> dict[str, float]:
    """Milliseconds per submission of each phase, from py-spy's raw (collapsed) output of the work
    thread `executor-0`. Samples taken before the first and after the last submission (py-spy
    attaches and detaches around them) are scaled out by `seconds`."""
    charged: collections.Counter[str] = collections.Counter()
    total = 0
    for line in spy_file.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if not frames[0].endswith(": executor-0"):
            continue
        names = {frame.split(" (")[0] for frame in frames[1:]}
        phase = "other (the work loop itself)"
        for label, function in PHASES:
            if function in names:
                phase = label
        charged[phase] += int(n)
        total += int(n)
    # The samples cover the attached span, a little longer than the counted one: charge the
    # waiting phase with the difference rather than stretch every phase.
    per_sample = seconds / max(total, 1)
    return {phase: charged[phase] * per_sample * 1000 / count for phase in charged}


def syscalls(strace_file: Path, count: int) -> list[tuple[str, float, float]]:
    """(syscall, calls per submission, strace's seconds per submission), busiest first."""
    rows = []
    for line in strace_file.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0].replace(".", "").isdigit() and parts[-1] != "total":
            rows.append((parts[-1], int(parts[3]) / count, float(parts[1]) / count))
    return sorted(rows, key=lambda row: -row[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--py-spy", default=shutil.which("py-spy"), help="py-spy's path (default: on PATH)")
    parser.add_argument("--no-strace", action="store_true")
    args = parser.parse_args()

    spool_ms, bare_ms, _ = _round(args.count, None)
    stage_floor = median(bare_ms)
    print(f"## Drop to final of `echo hi`, {args.count} one at a time (no tool attached)\n")
    print(f"- drop-to-final: median {median(spool_ms):.2f} ms, p95 {percentile(spool_ms, 0.95):.2f} ms")
    print(f"- bare fork/exec: median {stage_floor:.2f} ms; ratio {median(spool_ms) / stage_floor:.1f}x")

    with tempfile.TemporaryDirectory(prefix="cutor-profile-") as scratch:
        if args.py_spy:
            out = Path(scratch) / "spy.txt"
            tool = [args.py_spy, "record", "--format", "raw", "--threads", "--idle", "--nonblocking"]
            tool += ["-r", str(RATE), "-o", str(out), "-p"]
            spy_ms, _, seconds = _round(args.count, tool)
            under = f"drop-to-final under it: median {median(spy_ms):.2f} ms"
            print(f"\n## Phases of the work thread (py-spy, {RATE}/s; {under})\n")
            print("| phase | ms per submission |\n|---|---|")
            for phase, ms in sorted(phases(out, args.count, seconds).items(), key=lambda item: -item[1]):
                print(f"| {phase} | {ms:.2f} |")
        else:
            print("\n(phases left out: py-spy not found; `pip install py-spy` or --py-spy PATH)")
        if not args.no_strace and shutil.which("strace"):
            out = Path(scratch) / "strace.txt"
            _round(args.count, ["strace", "-c", "-f", "-o", str(out), "-p"])
            print("\n## System calls per submission (strace -c -f: the executor and all it starts)\n")
            print("| syscall | calls | strace's ms |\n|---|---|---|")
            rows = syscalls(out, args.count)
            for name, calls, secs in rows[:25]:
                print(f"| {name} | {calls:.1f} | {secs * 1000:.3f} |")
            print(f"| all | {sum(r[1] for r in rows):.0f} | {sum(r[2] for r in rows) * 1000:.2f} |")


if __name__ == "__main__":
    main()
