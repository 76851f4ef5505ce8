"""Hostile spool entries: a client controls every byte of the directory it drops, including names
the spool protocol uses (`.lease`, `result/`). None of it may stall a worker, make it write or
delete outside the entry, or be taken for a result the spool produced."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from conftest import make_submission, result, stage, wait_done


def drop_raw(spool: Path, staging: Path, entry_id: str) -> None:
    """Renames an entry built in the spool's tmp/ into incoming/ (FIFOs cannot be copied)."""
    (staging / ".ready").write_text("")
    os.rename(staging, spool / "incoming" / entry_id)


def test_protocol_names_planted_by_a_client_neither_stall_nor_escape(
    spool: Path, tmp_path: Path, executors: Any
) -> None:
    outside = tmp_path / "host-dir"  # stands for /etc: the executor runs as root
    outside.mkdir()
    (outside / "precious").write_text("keep me\n")
    cases: dict[str, Path] = {}
    build = spool / "tmp"

    fifo_lease = make_submission(build, "fifo-lease", {"run": "echo hi"})
    os.mkfifo(fifo_lease / ".lease")  # opening it for writing would block forever
    cases["fifo-lease"] = fifo_lease

    dir_lease = make_submission(build, "dir-lease", {"run": "echo hi"}, {".lease/x": "x"})
    cases["dir-lease"] = dir_lease

    symlinked_result = make_submission(build, "result-link", {"run": "echo hi"})
    os.symlink(outside, symlinked_result / "result")
    cases["result-link"] = symlinked_result

    tests_link = make_submission(build, "tests-link", {"run": "echo hi"}, {"result/notes.txt": "x"})
    os.symlink(outside, tests_link / "result" / "tests")
    os.symlink(outside / "precious", tests_link / "result" / "events.jsonl")
    cases["tests-link"] = tests_link

    result_file = make_submission(build, "result-file", {"run": "echo hi"}, {"result": "not a directory"})
    cases["result-file"] = result_file

    fifo_status = make_submission(build, "fifo-status", {"run": "echo hi"}, {"result/keep.txt": "x"})
    os.mkfifo(fifo_status / "result" / "status.json")
    os.mkfifo(fifo_status / "result" / "attempts.jsonl")
    cases["fifo-status"] = fifo_status

    empty_result = make_submission(build, "empty-result", {"run": "echo hi"})
    (empty_result / "result").mkdir()  # found by the fuzz test: a root client's result/ looked ours
    cases["empty-result"] = empty_result

    worker = executors(spool, "--concurrency", "2")
    for entry_id, source in cases.items():
        drop_raw(spool, source, entry_id)
    wait_done(spool, list(cases), timeout=60)  # a stall fails here
    assert sorted(os.listdir(outside)) == ["precious"], "the executor wrote outside the entry"
    assert (outside / "precious").read_text() == "keep me\n", "the executor wrote through a symlink"
    for entry_id in cases:
        status = result(spool, entry_id)
        assert status["state"] in ("done", "invalid"), (entry_id, status)
        if status["state"] == "done":
            assert stage(spool, entry_id, "run")["stdout"] == "hi\n"
        else:
            assert any("reserved" in e["message"] for e in status["errors"]), status["errors"]
    for name in ("fifo-lease", "dir-lease", "empty-result"):
        assert result(spool, name)["state"] == "invalid"  # the spool's names are not the client's
    assert list((spool / "active").iterdir()) == []
    assert worker.proc is not None and worker.proc.poll() is None


def test_a_forged_final_result_is_never_taken_for_the_spools(spool: Path, tmp_path: Path, executors: Any) -> None:
    """A student ships result/status.json saying "accepted, 100/100" (and a run.json to match):
    the submission is run and judged all the same, and the forgery is gone."""
    source = make_submission(spool / "tmp", "forger", {"run": "echo honest"})
    forged = {
        "id": "forger",
        "state": "done",
        "outcome": "ok",
        "attempts": 1,
        "score": 100,
        "max_score": 100,
        "worker": "executor-elsewhere-1",
        "states": {"done": "2026-01-01T00:00:00.000Z"},
    }
    (source / "result").mkdir()
    (source / "result" / "status.json").write_text(json.dumps(forged))
    (source / "result" / "run.json").write_text(json.dumps({"stdout": "forged\n", "status": "ok"}))
    (source / "result" / "attempts.jsonl").write_text(
        json.dumps({"event": "claimed", "worker": "executor-elsewhere-1", "attempt": 1, "token": "0"}) + "\n"
    )
    executors(spool)
    drop_raw(spool, source, "forger")
    wait_done(spool, "forger", timeout=30)
    status = result(spool, "forger")
    assert status["worker"] != "executor-elsewhere-1" and "score" not in status
    assert stage(spool, "forger", "run")["stdout"] == "honest\n"
