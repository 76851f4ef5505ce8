"""Property-based fuzzing of what clients control: 10,000 generated submission.yaml files and
directory trees at validation, and 10,000 more at a running executor (fewer with --quick). Never a
crash or a stall: always `invalid` with reasons, or a valid run, as validation alone predicts."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import CLI, ExecutorProcess, result, wait_done, write_config
from fuzz_strategies import Entry, materialise, submissions
from hypothesis import HealthCheck, event, given, settings

from cutor_spool.config import SpoolConfig
from cutor_spool.runner.intake import read_submission

CONFIG = SpoolConfig.model_validate({"max_submission_size": "2MiB", "max_files": 50})
counter = itertools.count()
# Names of the spool's own in an entry: a submission's are kept aside when it is claimed, and it
# ends invalid for them (validation outside the spool skips them: it cannot tell).
SPOOL_NAMES = [".lease", "result"]
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


class Live:
    """A spool with one executor running, shared by every example (starting one per example would
    cost more than all of them together)."""

    def __init__(self, spool: Path, log: Path) -> None:
        self.spool = spool
        # The executor's own settings, so that the validator here judges as it does.
        self.config = SpoolConfig.model_validate(yaml.safe_load((spool / "spool.yaml").read_text()))
        self.executor = ExecutorProcess(spool, ["executor", "--concurrency", "2"], log)
        self.log_seen = 0

    def check_executor(self) -> None:
        """Still running, and nothing it logged since the last check is a traceback."""
        assert self.executor.proc is not None and self.executor.proc.poll() is None, self.executor.output()[-3000:]
        with open(self.executor.log, "rb") as fh:
            fh.seek(self.log_seen)
            new = fh.read()
        self.log_seen += len(new)
        assert b"Traceback" not in new, new[-3000:].decode(errors="replace")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    base = tmp_path_factory.mktemp("fuzz-live")
    spool = base / "spool"
    subprocess.run([*CLI, "--spool", str(spool), "init"], check=True, capture_output=True)
    write_config(
        spool,
        max_submission_size="2MiB",
        max_files=50,
        status_page={"enabled": False},
        limits={"default": {"wall_time": "5s", "cpu_time": "2s"}},
    )
    state = Live(spool, base / "executor.log")
    yield state
    state.executor.stop()


@pytest.mark.timeout(3600)
@FUZZ
@given(submission=submissions)
def test_a_running_executor_ends_each_generated_submission_invalid_with_reasons_or_run(
    live: Live, submission: tuple[bytes | None, list[Entry]]
) -> None:
    document, tree = submission
    entry_id = f"fuzz-{next(counter)}"
    staging = live.spool / "tmp" / entry_id
    materialise(staging, document, tree)
    intake = read_submission(staging, live.config)  # what validation alone says, before the drop
    reserved = [name for name in SPOOL_NAMES if os.path.lexists(staging / name)]
    (staging / ".ready").write_bytes(b"")
    staging.rename(live.spool / "incoming" / entry_id)
    wait_done(live.spool, entry_id, timeout=60)  # a stall fails here
    status = result(live.spool, entry_id)
    # Invalid as validation says, or for needing a builder this executor lacks, or for holding a
    # name of the spool's own; otherwise it runs, whatever its outcome. Never `error`.
    valid = intake.plan is not None and not intake.plan.submission.dependencies
    if valid and not reserved:
        assert status["state"] == "done", (entry_id, status)
    else:
        assert status["state"] == "invalid", (entry_id, status, intake.problems, reserved)
        assert status["errors"] and all(e["where"] and e["message"] for e in status["errors"]), status
    if valid and reserved:  # then those names are the reason
        reasons = [e["message"] for e in status["errors"]]
        assert all(any(f"{name!r} is reserved for the spool" in m for m in reasons) for name in reserved), reasons
    event(status.get("outcome") or status["state"])  # shown by --hypothesis-show-statistics
    live.check_executor()
