"""The final results are on disk before the commit (runner/results.py, `_write_status`).

The terminal state's fsyncs run in the process's fsync threads while the worker releases its
sandbox, and the claim's commit waits for them. Here the threads are kept busy by the test (real
work queued on the real pool, no stand-in) so that the fsyncs are still to come when the claim's
directory is taken away, as a requeue after a lost lease does: the commit must fail and commit
nothing.
"""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import Future
from pathlib import Path

import pytest
from conftest import started_claim

from cutor_spool.config import SpoolConfig, StageKind
from cutor_spool.documents.states import Outcome, State
from cutor_spool.errors import LeaseLost
from cutor_spool.layout import SpoolPaths
from cutor_spool.runner import results
from cutor_spool.runner.results import Reporter
from cutor_spool.runner.stage import StageOutput, StageStatus
from cutor_spool.watcher.claim import Claim


def claimed(spool: Path, name: str) -> tuple[Claim, Reporter]:
    entry = SpoolPaths(spool).submissions.incoming / name
    entry.mkdir()
    (entry / "submission.yaml").write_text("run: echo hi\n")
    claim, reporter = started_claim(spool, name)
    limits = SpoolConfig().limits.stage_default(StageKind.RUN)
    out = StageOutput("run", StageStatus.OK, 0, None, b"hi\n", b"", b"hi\n", False, False, 0.0, 0.0, 0, limits)
    reporter.stage("run", out)
    return claim, reporter


def busy_syncers() -> tuple[threading.Event, list[Future[bool]]]:
    """Both fsync threads held by a wait, so that what is queued behind them waits too."""
    go = threading.Event()
    held = [results._SYNCER.submit(go.wait, 30) for _ in range(results._SYNCER._max_workers)]
    return go, held


def test_the_commit_waits_for_the_final_fsyncs_and_a_failed_one_commits_nothing(spool: Path) -> None:
    claim, reporter = claimed(spool, "lost")
    go, held = busy_syncers()
    try:
        reporter.finish(State.DONE, Outcome.OK)  # returns with its fsyncs still queued
        assert not (claim.path / "result" / "status.json").exists()  # not before it is on disk
        moved = spool / "elsewhere"
        os.rename(claim.path, moved)  # the claim is taken away, as a requeue after a lost lease does
    finally:
        go.set()
        for future in held:
            future.result()
    with pytest.raises(LeaseLost):
        claim.commit()
    assert not (SpoolPaths(spool).submissions.done / "lost").exists()
    assert not (moved / "result" / "status.json").exists()  # the end never landed in the moved entry
    # Its temporary file is left in the entry; the next attempt removes it, as any leftover.
    assert [p.name for p in (moved / "result").iterdir() if p.name.startswith(".tmp-")] != []
    os.rename(moved, SpoolPaths(spool).submissions.incoming / "lost")
    second, _ = started_claim(spool, "lost")
    assert [p.name for p in (second.path / "result").iterdir() if p.name.startswith(".tmp-")] == []


def test_the_commit_after_the_fsyncs_lands_the_final_state(spool: Path) -> None:
    claim, reporter = claimed(spool, "fine")
    go, held = busy_syncers()
    try:
        reporter.finish(State.DONE, Outcome.OK)
        assert claim.before_commit  # the fsyncs are still to come
    finally:
        go.set()
        for future in held:
            future.result()
    done = claim.commit()
    assert claim.before_commit == []
    status = json.loads((done / "result" / "status.json").read_text())
    assert (status["state"], status["outcome"]) == ("done", "ok")
    assert json.loads((done / "result" / "run.json").read_text())["stdout"] == "hi\n"
