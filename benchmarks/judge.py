"""The cost of judging: one submission with 100 tests of a trivial program (`cat`), bubblewrap
backend, local disk. Per test and in total: the judging itself (first `testing` event to `done`),
and the whole submission from the drop to done/<id>; then the same with a checker program (a
second sandboxed stage per test).

Baselines, side by side in the same run (each round runs every variant once, so that the load of
the machine weighs on all of them alike; medians over the rounds):
- the same 100 stages run straight through the sandbox backend, with no spool, no judge and no
  result files: the floor the judge stands on;
- 100 separate plain submissions (`run: cat` with the test's stdin) dropped at once: what judging
  each test would cost without judge mode;
- a bare fork/exec of `cat` from Python.

    sudo .venv/bin/python benchmarks/judge.py [--tests 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from _common import DoneWatch, bare_exec_ms, drop, executors, make_source, median, scratch_spool

from cutor_spool.config import SpoolConfig
from cutor_spool.limits import Limits
from cutor_spool.runner.backend import make_backend
from cutor_spool.runner.slots import SlotPool
from cutor_spool.runner.stage import StageSpec

CHECKER_PROGRAM = {"type": "program", "run": 'cmp -s "$2" "$3"'}


def judged_submission(tests: int, checker: Any = None) -> dict[str, Any]:
    sub: dict[str, Any] = {"run": "cat", "tests": [{"input": f"{i}\n", "output": f"{i}\n"} for i in range(tests)]}
    if checker is not None:
        sub["checker"] = checker
    return sub


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def judge_once(spool: Path, watch: DoneWatch, source: Path, name: str) -> tuple[float, float]:
    """(drop-to-done seconds, judging seconds) for one judged submission."""
    start = time.perf_counter()
    drop(spool, source, name)
    total = watch.wait(name, timeout=600) - start
    result = spool / "done" / name / "result"
    status = json.loads((result / "status.json").read_text())
    assert status["outcome"] == "accepted", status
    # status.json keeps the last time of each state; the first test's start is in the events
    events = [json.loads(line) for line in (result / "events.jsonl").read_text().splitlines()]
    first = next(e["at"] for e in events if e["event"] == "testing")
    return total, _seconds(status["states"]["done"]) - _seconds(first)


def separate_once(spool: Path, watch: DoneWatch, sources: list[Path], round_: int) -> float:
    names = [f"plain-{round_}-{i:04d}" for i in range(len(sources))]
    start = time.perf_counter()
    for name, source in zip(names, sources, strict=True):
        drop(spool, source, name)
    return watch.wait_all(names) - start


class RawStages:
    """The same stages straight through the backend, in a slot of its own."""

    def __init__(self) -> None:
        config = SpoolConfig()
        state = Path("/run/cutor-spool")
        box = config.sandbox
        self.pool = SlotPool(uid_base=box.uid_base, count=box.slots, work_size=64 << 20, state_dir=state)
        self.backend = make_backend(config.backend, config, state)
        self.limits = Limits.from_spec(config.limits.default)

    def run(self, tests: int) -> float:
        slot = self.pool.acquire()
        try:
            sandbox = self.backend.open(slot, "bench")
            start = time.perf_counter()
            for i in range(tests):
                data = f"{i}\n".encode()
                out = sandbox.run(StageSpec(name=f"tests/{i}", command=("cat",), limits=self.limits, stdin=data))
                assert out.ok and out.stdout == data, out
            elapsed = time.perf_counter() - start
            sandbox.close()
        finally:
            self.pool.release(slot)
        return elapsed


def row(label: str, seconds: float, tests: int, note: str = "") -> None:
    print(f"{label:44s} {seconds * 1000 / tests:8.2f} ms per test {seconds:8.2f} s total   {note}".rstrip())


def measure(tests: int, rounds: int) -> dict[str, float]:
    """Seconds for `tests` tests (medians over `rounds`): "bare", "raw", "lines_judging",
    "lines_total", "program_judging", "program_total", "plain"."""
    n = tests
    samples: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        samples.setdefault(key, []).append(value)

    raw = RawStages()
    raw.run(5)  # warm-up
    with scratch_spool() as spool:
        base = spool.parent
        lines = make_source(base, "judged", judged_submission(n))
        program = make_source(base, "judged-program", judged_submission(n, CHECKER_PROGRAM))
        plain = [make_source(base, f"plain-{i}", {"run": "cat", "stdin": f"{i}\n"}) for i in range(n)]
        watch = DoneWatch(spool / "done")
        try:
            with executors(spool, 1, "--concurrency", "1"):
                judge_once(spool, watch, lines, "warm")
                for r in range(rounds):
                    add("bare", bare_exec_ms(["cat", "/dev/null"], n=20) / 1000 * n)
                    add("raw", raw.run(n))
                    total, judging = judge_once(spool, watch, lines, f"lines-{r}")
                    add("lines_total", total)
                    add("lines_judging", judging)
                    total, judging = judge_once(spool, watch, program, f"program-{r}")
                    add("program_total", total)
                    add("program_judging", judging)
                    add("plain", separate_once(spool, watch, plain, r))
        finally:
            watch.close()
    return {key: median(values) for key, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tests", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n = args.tests
    f = measure(n, args.rounds)
    print(f"{n} tests of `cat`, bubblewrap, medians of {args.rounds} rounds")
    row("bare fork/exec of cat", f["bare"], n)
    row("backend only (no spool, no judge)", f["raw"], n)
    row("judged, lines checker: judging", f["lines_judging"], n, f"({f['lines_judging'] / f['raw']:.2f}x backend only)")
    row("judged, lines checker: drop to done", f["lines_total"], n)
    row(
        "judged, checker program: judging",
        f["program_judging"],
        n,
        f"({f['program_judging'] / f['lines_judging']:.2f}x lines checker)",
    )
    row("judged, checker program: drop to done", f["program_total"], n)
    ratio = f["plain"] / f["lines_total"]
    row(f"{n} separate plain submissions", f["plain"], n, f"({ratio:.2f}x one judged submission)")


if __name__ == "__main__":
    main()
