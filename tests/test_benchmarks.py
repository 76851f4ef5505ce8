"""The benchmark suite runs end to end: `benchmarks/run_all.py --quick` prints one table with every
figure measured. Figures are reported, never asserted (a timing assertion fails on a busy machine
and proves nothing on a quiet one): this checks that every row has a number, a baseline where it
names one, and a verdict against its target, so the full run cannot silently lose a part.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from typing import Any

import pytest
from conftest import ROOT, need
from docker_image.fixtures import start_engine_and_build

# ~45 s: both tests read one `run_all.py --quick` run (the module fixture), the time is all there.
pytestmark = pytest.mark.slow

# The figures issues 7 and 18 ask for; run_all.py may print more, never fewer.
REQUIRED = {
    "pipeline.docker_run",  # the `docker run` baseline a user would otherwise pick
    "pipeline.inotify.median",
    "pipeline.inotify.p95",
    "pipeline.poll.median",
    "pipeline.poll.p95",
    "pipeline.throughput.1",
    "pipeline.throughput.2",
    "sandbox.bwrap",
    "sandbox.docker",
    "nix.enter",
    "status.one",
    "judge.lines",
    "backlog.claim.median",
    "backlog.executor.inotify",
    # issue 18's, each a ratio to a baseline of the same run
    "pipeline.inotify.stage",
    "pipeline.inotify.stage_p95",
    "pipeline.throughput.2_bare",
    "sandbox.bwrap_captured",
}
NUMBER = re.compile(r"^-?\d+(\.\d+)?( ?(µs|ms|s|/s))?$")


def table_rows(text: str) -> list[list[str]]:
    """The figure rows of the printed Markdown table (no header, separator or section rows)."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("| "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if cells[0] == "figure" or cells[0].startswith("**"):
            continue
        rows.append(cells)
    return rows


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    need(os.geteuid() == 0, "the benchmarks run stages as per-slot uids: root")
    need(shutil.which("bwrap") is not None, "bubblewrap")
    need(shutil.which("nix-shell") is not None, "Nix")
    need((problem := start_engine_and_build()) is None, problem or "")
    out = tmp_path_factory.mktemp("bench") / "figures.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=ROOT,
    )
    assert proc.returncode == 0, f"run_all.py failed:\n{proc.stdout}\n{proc.stderr[-5000:]}"
    return proc, json.loads(out.read_text())


@pytest.mark.timeout(1500)
def test_every_row_has_a_number(quick_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> None:
    proc, doc = quick_run
    printed = table_rows(proc.stdout)
    rows = doc["rows"]
    assert len(printed) == len(rows) > 0, proc.stdout
    keys = {row["key"] for row in rows}
    assert keys >= REQUIRED, f"missing: {sorted(REQUIRED - keys)}"
    for cells, row in zip(printed, rows, strict=True):
        figure, value, baseline, ratio, target, met = cells
        assert figure == row["figure"]
        assert NUMBER.match(value), f"{figure}: no number ({value!r}; {met})"
        assert isinstance(row["value"], float)
        if row["baseline"] is not None:  # a row that names a baseline has measured it
            assert isinstance(row["baseline_value"], float), row
            assert NUMBER.match(ratio.removesuffix("x")), f"{figure}: ratio {ratio!r}"
            assert baseline.startswith(row["baseline"] + ": "), baseline
        if row["target"] is not None:  # and a row with a target says whether it met it
            assert target == row["target"]
            assert met.split()[0] in ("yes", "**NO**"), f"{figure}: {met!r}"
            assert row["met"] in (True, False)


@pytest.mark.timeout(1500)
def test_header_says_how_loaded_the_machine_was(
    quick_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    proc, doc = quick_run
    assert "quick" in proc.stdout.splitlines()[0]
    assert re.search(r"load average \(1, 5, 15 min\): [\d.]+ [\d.]+ [\d.]+ at the start", proc.stdout)
    assert doc["mode"] == "quick" and doc["counts"]["backlog"] > 10
