"""Regenerating the status page of a spool with 10,000 finished submissions.

The figure that matters is the update after one more submission finishes (target: under 1 s):
what every worker pays, throttled, for the whole life of the spool. Printed side by side, in the
same run and on the same spool, with the two things the index exists to avoid:

- re-reading every done/<id>/result/status.json (what a generator without an index must do at
  least, even if it rendered nothing), and
- a full regeneration (no index: read and render everything), which is also the cold start.

The spool's entries are written with the project's own result writers (`StageOutput.to_json`,
`stage_summary`, the status.json and events.jsonl shapes of `results.Reporter`): 70% plain runs,
20% judged with 10 tests each, 10% compile errors. Local disk; on NFS every figure grows, the
re-read ones most (one round trip per file opened).

The front page's search runs in the browser over every result (`history/<n>.js`): with
`--browser` (needs chromium), headless Chromium opens the 10,000-result page and the figures are
the time to the first search's rows (loading every data file), and the filter time of several
searches (`data-filter-ms`: matching 10,000 rows and drawing up to 500), medians over `--rounds`.

    .venv/bin/python benchmarks/status_page.py [--entries 10000] [--rounds 5] [--keep DIR] [--browser]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cutor_spool.atomic import write_json
from cutor_spool.config import StatusPageConfig
from cutor_spool.layout import SpoolPaths
from cutor_spool.limits import Limits
from cutor_spool.runner.results import stage_summary
from cutor_spool.runner.stage import StageOutput, StageStatus
from cutor_spool.watcher.claim import iso
from cutor_spool.web_status import regenerate

CONFIG = StatusPageConfig(interval=2.0, recent=200)
LIMITS = Limits(
    cpu_time=5, wall_time=10, memory=2**29, processes=64, file_size=2**26, open_files=256, stack=2**26, output=2**20
)


def output(stage: str, status: StageStatus, stdout: str, stderr: str = "") -> StageOutput:
    return StageOutput(
        stage=stage,
        status=status,
        exit_code=0 if status == StageStatus.OK else 1,
        signal=None,
        stdout=stdout.encode(),
        stderr=stderr.encode(),
        output=(stdout + stderr).encode(),
        stdout_truncated=False,
        stderr_truncated=False,
        cpu_time=0.012,
        wall_time=0.031,
        memory=1_400_000,
        limits=LIMITS,
        backend="bubblewrap",
    )


def write_entry(paths: SpoolPaths, name: str, n: int, finished: float) -> None:
    """One finished submission, built in tmp/ and committed with a rename, as the executor does."""
    staging = paths.tmp / f"bench-{name}"
    result = staging / "result"
    result.mkdir(parents=True)
    (staging / "submission.yaml").write_text("run: ./prog\n")
    states = {"queued": iso(finished - 3), "claimed": iso(finished - 1), "running": iso(finished - 0.5)}
    status: dict[str, Any] = {
        "id": name,
        "attempts": 1,
        "worker": "executor-bench-1",
        "host": "bench",
        "backend": "bubblewrap",
        "stages": {},
    }
    events = [{"at": iso(finished - 1), "event": "claimed", "attempt": 1, "message": "attempt 1"}]
    kind = n % 10
    if kind == 9:  # compile error
        compile_out = output("compile", StageStatus.RUNTIME_ERROR, "", "prog.c:1:12: error: expected ')'\n")
        write_json(result / "compile.json", compile_out.to_json(), fsync=False)
        status["stages"]["compile"] = stage_summary(compile_out).dump()
        status.update(state="done", outcome="compile_error")
    elif kind >= 7:  # judged, 10 tests
        (result / "tests").mkdir()
        verdicts = {}
        for t in range(10):
            verdict = "accepted" if t < 8 or kind == 7 else "wrong_answer"
            run = output(f"tests/t{t}", StageStatus.OK, f"{t * n}\n")
            doc = {**run.to_json(), "verdict": verdict, "score": 1.0 if verdict == "accepted" else 0.0, "points": 1.0}
            write_json(result / "tests" / f"t{t}.json", doc, fsync=False)
            verdicts[f"t{t}"] = verdict
        accepted = sum(v == "accepted" for v in verdicts.values())
        status.update(
            state="done",
            outcome="accepted" if accepted == 10 else "partial",
            tests=verdicts,
            tests_done=10,
            tests_total=10,
            score=float(accepted),
            max_score=10.0,
        )
    else:
        run = output("run", StageStatus.OK, f"hello from submission {n}\n" * 5)
        write_json(result / "run.json", run.to_json(), fsync=False)
        status["stages"]["run"] = stage_summary(run).dump()
        status.update(state="done", outcome="ok")
    states["done"] = iso(finished)
    status.update(states=states, updated_at=iso(finished))
    write_json(result / "status.json", status, fsync=False)
    events.append({"at": iso(finished), "event": "done", "attempt": 1, "outcome": status["outcome"]})
    (result / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    os.rename(staging, paths.submissions.done / name)


def reread_all(paths: SpoolPaths) -> float:
    """The floor of a generator without an index: open and parse every status.json."""
    start = time.perf_counter()
    for entry in os.scandir(paths.submissions.done):
        with open(Path(entry.path) / "result" / "status.json", "rb") as fh:
            json.loads(fh.read())
    return time.perf_counter() - start


def measure(
    entries: int, rounds: int, keep: Path | None = None, say: Callable[[str], None] = print
) -> dict[str, float]:
    """Seconds (medians over `rounds`): "cold", "nothing", "one", "ten", "reread", "full"; and
    "index_mib". Builds the spool in `keep` (kept) or in a temporary directory (removed)."""
    root = keep or Path(tempfile.mkdtemp(prefix="cutor-bench-status-"))
    try:
        return _measure(SpoolPaths(root / "spool"), entries, rounds, say)
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)


def _measure(paths: SpoolPaths, entries: int, rounds: int, say: Callable[[str], None]) -> dict[str, float]:
    paths.init()
    base = time.time() - entries
    start = time.perf_counter()
    for n in range(entries):
        write_entry(paths, f"sub-{n:06d}", n, base + n * 0.5)
    say(f"spool: {entries} finished submissions written in {time.perf_counter() - start:.1f}s ({paths.root})")

    cold = regenerate(paths, CONFIG)
    assert cold.rendered == entries
    say(f"cold start (no index): {cold.seconds:8.3f} s  ({cold.rendered} pages, {cold.history_rendered} history pages)")
    os.sync()
    nothing = [regenerate(paths, CONFIG).seconds for _ in range(rounds)]

    one, reread, full = [], [], []
    for r in range(rounds):
        write_entry(paths, f"new-{r:03d}", r, time.time())
        os.sync()  # each measurement starts with nothing of the previous one left to write back
        report = regenerate(paths, CONFIG)
        assert (report.rendered, report.removed) == (1, 0), report
        one.append(report.seconds)
        os.sync()
        reread.append(reread_all(paths))
        full.append(regenerate(paths, CONFIG, full=True).seconds)  # also restores a warm index
        os.sync()
    ten = []
    for r in range(rounds):
        for k in range(10):
            write_entry(paths, f"batch-{r:03d}-{k}", k, time.time())
        os.sync()
        ten.append(regenerate(paths, CONFIG).seconds)
    index = paths.status / "_index.json"
    return {
        "cold": cold.seconds,
        "nothing": statistics.median(nothing),
        "one": statistics.median(one),
        "ten": statistics.median(ten),
        "reread": statistics.median(reread),
        "full": statistics.median(full),
        "index_mib": index.stat().st_size / 2**20,
    }


SEARCHES = (
    ("id prefix, 10 rows", {"f-id": "sub-00012"}),
    ("id substring, every row", {"f-id": "sub-"}),
    ("state done", {"f-state": "done"}),
    ("outcome partial", {"f-outcome": "partial"}),
    ("id and outcome", {"f-id": "sub-001", "f-outcome": "accepted"}),
)


def measure_search(paths: SpoolPaths, rounds: int, say: Callable[[str], None] = print) -> dict[str, float]:
    """Milliseconds, in headless Chromium: "first" (open the page with a search in its hash until
    its rows show: loading every data file), and one median filter time per SEARCHES label."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from cdp import Browser  # the tests' DevTools client (tests/cdp.py)

    index = (paths.status / "index.html").as_uri()
    data = sum(p.stat().st_size for p in (paths.status / "history").glob("*.js"))
    say(f"front page {(paths.status / 'index.html').stat().st_size / 1024:.0f} KiB; search data {data / 2**20:.1f} MiB")
    figures: dict[str, list[float]] = {"first": []}
    with tempfile.TemporaryDirectory() as profile, Browser(Path(profile)) as browser:
        for _ in range(rounds):
            browser.open("about:blank")
            start = time.perf_counter()
            browser.open(index + "#q=sub-00012")
            browser.wait("document.querySelector('table.results').hasAttribute('data-filtered')")
            figures["first"].append((time.perf_counter() - start) * 1000)
            for label, fields in SEARCHES:
                browser.eval("document.getElementById('f-clear').click()")
                script = "".join(f"document.getElementById('{k}').value = {json.dumps(v)};" for k, v in fields.items())
                browser.eval(script + "document.getElementById('search').dispatchEvent(new Event('input'))")
                browser.wait("document.querySelector('table.results').hasAttribute('data-filtered')")
                figures.setdefault(label, []).append(float(browser.eval("document.body.dataset.filterMs")))
    return {label: statistics.median(values) for label, values in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="build the spool here and keep it (default: a temporary one)")
    parser.add_argument("--browser", action="store_true", help="also time the front page's search in Chromium")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="cutor-bench-status-"))
    try:
        f = measure(args.entries, args.rounds, root)
        search = measure_search(SpoolPaths(root / "spool"), args.rounds) if args.browser else {}
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    rounds = args.rounds
    print(f"nothing changed:       {f['nothing']:8.3f} s  (median of {rounds})")
    print(f"one more finished:     {f['one']:8.3f} s  (median of {rounds}; target < 1 s)")
    print(f"ten more finished:     {f['ten']:8.3f} s")
    print("baselines, same spool, same rounds:")
    for key, label in (
        ("reread", "re-read every status.json, render nothing"),
        ("full", "full regeneration (no index)"),
    ):
        print(f"  {label:43s} {f[key]:8.3f} s  ({f[key] / f['one']:5.1f}x the update)")
    print(f"index: {f['index_mib']:.1f} MiB for {args.entries + 11 * rounds} entries")
    if search:
        print(f"search in Chromium ({args.entries + 11 * rounds} results; medians of {rounds}):")
        print(f"  open with a search in the hash, to its rows: {search.pop('first'):8.1f} ms (loads every data file)")
        for label, ms in search.items():
            print(f"  filter: {label:36s} {ms:8.1f} ms")


if __name__ == "__main__":
    main()
