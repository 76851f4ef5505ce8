"""Property-based fuzzing of what clients control: 10,000 generated submission.yaml files and
directory trees at validation, and 10,000 more at a running executor. Never a crash or a stall:
always `invalid` with reasons, or a valid run."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import ExecutorProcess, wait_done, write_config
from fuzz_strategies import Entry, materialise, submissions
from hypothesis import HealthCheck, given, settings

from cutor_spool.config import SpoolConfig
from cutor_spool.intake import read_submission

CONFIG = SpoolConfig.model_validate({"max_submission_size": "2MiB", "max_files": 50})
counter = itertools.count()
# The number of examples comes from the hypothesis profile conftest loads: 10,000 in full ("ci"),
# fewer with --quick.
FUZZ = settings(deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))


@pytest.mark.timeout(1800)
@FUZZ
@given(submission=submissions)
def test_validation_never_crashes_and_always_explains(
    tmp_path_factory: pytest.TempPathFactory, submission: tuple[bytes | None, list[Entry]]
) -> None:
    document, tree = submission
    root = tmp_path_factory.getbasetemp() / "fuzz-validate" / str(next(counter))
    materialise(root, document, tree)
    try:
        intake = read_submission(root, CONFIG)
        if intake.plan is None:
            assert intake.problems, "invalid without a reason"
            for problem in intake.problems:
                assert problem.where and problem.message
                json.dumps(problem.to_json())  # reportable as it is
        else:
            assert not intake.problems
            plan = intake.plan
            assert "submission.yaml" not in plan.workdir_files
            for name in plan.workdir_files:
                assert not name.startswith("/") and ".." not in name.split("/")
                assert (root / name).is_file() and not (root / name).is_symlink()
    finally:
        shutil.rmtree(root, ignore_errors=True)


class Dropped:
    def __init__(self) -> None:
        self.ids: list[str] = []
        self.spool: Path | None = None
        self.executor: ExecutorProcess | None = None


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Any:
    base = tmp_path_factory.mktemp("fuzz-live")
    spool = base / "spool"
    import subprocess

    from conftest import CLI

    subprocess.run([*CLI, "--spool", str(spool), "init"], check=True, capture_output=True)
    write_config(
        spool,
        max_submission_size="2MiB",
        max_files=50,
        status_page={"enabled": False},
        limits={"default": {"wall_time": "5s", "cpu_time": "2s"}},
    )
    state = Dropped()
    state.spool = spool
    state.executor = ExecutorProcess(spool, ["executor", "--concurrency", "2"], base / "executor.log")
    yield state
    state.executor.stop()


@pytest.mark.timeout(1800)
@FUZZ
@given(submission=submissions)
def test_drop_generated_submissions_at_a_running_executor(
    live: Dropped, submission: tuple[bytes | None, list[Entry]]
) -> None:
    document, tree = submission
    assert live.spool is not None
    entry_id = f"fuzz-{next(counter)}"
    staging = live.spool / "tmp" / entry_id
    materialise(staging, document, tree)
    (staging / ".ready").write_bytes(b"")
    staging.rename(live.spool / "incoming" / entry_id)
    live.ids.append(entry_id)


@pytest.mark.timeout(2400)
def test_every_generated_submission_ended_invalid_with_reasons_or_ran(live: Dropped) -> None:
    assert live.spool is not None and live.executor is not None
    assert len(live.ids) >= settings.default.max_examples
    wait_done(live.spool, live.ids, timeout=1800)  # a stall fails here
    outcomes: dict[str, int] = {}
    for entry_id in live.ids:
        status = json.loads((live.spool / "done" / entry_id / "result" / "status.json").read_text())
        assert status["state"] in ("invalid", "done"), (entry_id, status)
        if status["state"] == "invalid":
            assert status["errors"] and all(e["where"] and e["message"] for e in status["errors"])
        outcomes[status.get("outcome") or status["state"]] = (
            outcomes.get(status.get("outcome") or status["state"], 0) + 1
        )
    assert live.executor.proc is not None and live.executor.proc.poll() is None
    assert "Traceback" not in live.executor.output(), live.executor.output()[-3000:]
    print("fuzz outcomes:", outcomes)
