"""The cost of judging: one submission with 100 tests of a trivial program (`cat`), bubblewrap
backend, local disk. Total time from the drop to done/<id> and per test; the judging alone (first
`testing` to `done`, from status.json's timestamps) per test; and the same with a checker program
(a second sandboxed stage per test).

Baselines, side by side in the same run:
- the same 100 test stages run straight through the sandbox backend, with no spool, no judge and
  no result files: the floor the judge stands on;
- 100 separate plain submissions (`run: cat` with the test's stdin), which is what judging each
  test would cost without judge mode;
- a bare fork/exec of `cat` from Python.

    sudo .venv/bin/python benchmarks/judge.py [--tests 100] [--repeat 3]
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


def judged_submission(tests: int, checker: Any = None) -> dict[str, Any]:
    sub: dict[str, Any] = {"run": "cat", "tests": [{"input": f"{i}\n", "output": f"{i}\n"} for i in range(tests)]}
    if checker is not None:
        sub["checker"] = checker
    return sub


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def judge(tests: int, repeat: int, checker: Any = None) -> tuple[float, float]:
    """(median drop-to-done seconds, median judging seconds) for one judged submission."""
    totals, judging = [], []
    with scratch_spool() as spool:
        source = make_source(spool.parent, "judged", judged_submission(tests, checker))
        watch = DoneWatch(spool / "done")
        with executors(spool, 1, "--concurrency", "1"):
            drop(spool, source, "warm")
            watch.wait("warm", timeout=300)
            for i in range(repeat):
                name = f"judge-{i}"
                start = time.perf_counter()
                drop(spool, source, name)
                totals.append(watch.wait(name, timeout=600) - start)
                result = spool / "done" / name / "result"
                status = json.loads((result / "status.json").read_text())
                assert status["outcome"] == "accepted", status
                # status.json keeps the last time of each state; the first test's start is an event
                events = [json.loads(line) for line in (result / "events.jsonl").read_text().splitlines()]
                first = next(e["at"] for e in events if e["event"] == "testing")
                judging.append(_seconds(status["states"]["done"]) - _seconds(first))
        watch.close()
    return median(totals), median(judging)


def separate(tests: int) -> float:
    """Seconds for `tests` plain submissions dropped at once, one executor with one slot."""
    with scratch_spool() as spool:
        watch = DoneWatch(spool / "done")
        sources = [make_source(spool.parent, f"plain-{i}", {"run": "cat", "stdin": f"{i}\n"}) for i in range(tests)]
        with executors(spool, 1, "--concurrency", "1"):
            drop(spool, sources[0], "warm")
            watch.wait("warm")
            names = [f"plain-{i:04d}" for i in range(tests)]
            start = time.perf_counter()
            for name, source in zip(names, sources, strict=True):
                drop(spool, source, name)
            end = watch.wait_all(names)
        watch.close()
    return end - start


def raw_stages(tests: int, repeat: int) -> float:
    """Median seconds for `tests` stages straight through the backend (no spool, no judge)."""
    config = SpoolConfig()
    state = Path("/run/cutor-spool")
    pool = SlotPool(uid_base=config.sandbox.uid_base, count=config.sandbox.slots, work_size=64 << 20, state_dir=state)
    backend = make_backend(config.backend, config, state)
    limits = Limits.from_spec(config.limits.default)
    slot = pool.acquire()
    runs = []
    try:
        sandbox = backend.open(slot, "bench")
        for _ in range(repeat + 1):
            start = time.perf_counter()
            for i in range(tests):
                out = sandbox.run(
                    StageSpec(name=f"tests/{i}", command=("cat",), limits=limits, stdin=f"{i}\n".encode())
                )
                assert out.ok and out.stdout == f"{i}\n".encode(), out
            runs.append(time.perf_counter() - start)
        sandbox.close()
    finally:
        pool.release(slot)
    return median(runs[1:])


def row(label: str, seconds: float, tests: int, note: str = "") -> None:
    print(f"{label:44s} {seconds * 1000 / tests:8.2f} ms per test {seconds:8.2f} s total   {note}".rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tests", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = args.tests
    bare = bare_exec_ms(["cat", "/dev/null"]) / 1000 * n
    raw = raw_stages(n, args.repeat)
    total, judging = judge(n, args.repeat)
    total_prog, judging_prog = judge(n, args.repeat, {"type": "program", "run": 'cmp -s "$2" "$3"'})
    plain = separate(n)
    print(f"{n} tests of `cat`, bubblewrap, medians of {args.repeat} runs")
    row("bare fork/exec of cat", bare, n)
    row("backend only (no spool, no judge)", raw, n)
    row("judged, lines checker: judging", judging, n, f"({judging / raw:.2f}x backend only)")
    row("judged, lines checker: drop to done", total, n)
    row("judged, checker program: judging", judging_prog, n, f"({judging_prog / judging:.2f}x lines checker)")
    row("judged, checker program: drop to done", total_prog, n)
    row(f"{n} separate plain submissions", plain, n, f"({plain / total:.2f}x one judged submission)")


if __name__ == "__main__":
    main()
