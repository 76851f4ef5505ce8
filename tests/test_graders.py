"""The grader seam: the submission chooses its grader, the pipeline runs whichever it is.

These drive a real `Pipeline` in this process (a real spool entry, claim and reporter, real
bubblewrap sandboxes), so that a grader registered here is one the pipeline can pick up: an
executor process would not see it. Today's graders (`run`, `batch`) are held to their results by
the end-to-end suites (test_judge_cases.py, test_judge_flow.py, test_examples_ci.py).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, make_submission

from cutor_spool.config import StageKind, load_config
from cutor_spool.documents.states import Outcome, State
from cutor_spool.layout import SpoolPaths
from cutor_spool.runner.bwrap import BubblewrapBackend
from cutor_spool.runner.intake import Plan
from cutor_spool.runner.judge.graders import GRADERS, GradingContext, Stopped
from cutor_spool.runner.pipeline import Pipeline
from cutor_spool.runner.results import Reporter
from cutor_spool.runner.slots import DEFAULT_STATE_DIR, SlotPool
from cutor_spool.runner.tree import Problem
from cutor_spool.watcher.cancel import Cancelled
from cutor_spool.watcher.queue import SpoolQueue, WorkerIdentity

UID_BASE, SLOTS = 61000, 64  # the sandbox tests' slots: the pool's locks keep them apart


@dataclass
class EchoGrader:
    """A tiny grader: one sandboxed stage whatever the tests, and a note of every call."""

    name: str = "echo"
    calls: list[str] = field(default_factory=list)

    def problems(self, plan: Plan) -> list[Problem]:
        return [] if plan.submission.args != ["refuse"] else [Problem("args", "the echo grader refuses this")]

    def grade(self, context: GradingContext) -> None:
        self.calls.append("grade")
        runner = context.runner
        spec = runner.spec("echo", ("/bin/sh", "-c", "echo graded by echo"), context.plan.limits[StageKind.RUN])
        output = runner.run(spec)
        context.reporter.stage("echo", output)
        context.reporter.finish(State.DONE, Outcome.OK, reason=output.stdout.decode().strip())

    def stopped(self, context: GradingContext, stop: Stopped) -> None:
        self.calls.append(f"stopped {stop.step} {stop.outcome}: {stop.message}")


@pytest.fixture(scope="module")
def backend() -> BubblewrapBackend:
    return BubblewrapBackend(state_dir=DEFAULT_STATE_DIR, uid_base=UID_BASE, slots=SLOTS, tmp_size=32 << 20)


@pytest.fixture
def echo() -> Iterator[EchoGrader]:
    grader = EchoGrader()
    GRADERS[grader.name] = grader  # registered as a plugin module would register itself
    yield grader
    del GRADERS[grader.name]


def process(spool: Path, backend: BubblewrapBackend, entry_id: str, spec: dict[str, Any]) -> dict[str, Any]:
    """One submission through a pipeline with the default registry, as the executor builds it."""
    paths = SpoolPaths(spool)
    make_submission(paths.submissions.incoming, entry_id, spec)
    identity = WorkerIdentity.make("executor")
    claim = SpoolQueue(paths.submissions, identity, log_name="result/attempts.jsonl").claim(entry_id)
    assert claim is not None
    reporter = Reporter(claim, identity)
    reporter.start()
    pipeline = Pipeline(load_config(spool), backend, SlotPool(uid_base=UID_BASE, count=SLOTS, work_size=64 << 20))
    pipeline.process(claim.path, reporter, Cancelled())
    done = claim.commit()  # as the executor does: the final status is on disk once committed
    status: dict[str, Any] = json.loads((done / "result" / "status.json").read_text())
    return status


def test_an_unknown_grader_is_invalid_and_the_message_names_the_known_ones(
    spool: Path, backend: BubblewrapBackend
) -> None:
    status = process(spool, backend, "unknown", {"run": "cat", "tests": [{"output": ""}], "grader": "telepathic"})
    assert status["state"] == "invalid"
    known = ", ".join(sorted(GRADERS))
    assert status["errors"] == [
        {"where": "grader", "message": f"unknown grader 'telepathic': the known graders are {known}"}
    ]


def test_validate_and_submit_say_what_an_executor_would(spool: Path, tmp_path: Path) -> None:
    directory = make_submission(tmp_path, "telepathic", {"run": "cat", "grader": "telepathic"})
    proc = subprocess.run([*CLI, "validate", str(directory)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    known = ", ".join(sorted(GRADERS))
    assert f"grader: unknown grader 'telepathic': the known graders are {known}" in proc.stdout
    proc = subprocess.run([*CLI, "--spool", str(spool), "submit", str(directory)], capture_output=True, text=True)
    assert proc.returncode == 3 and "unknown grader 'telepathic'" in proc.stderr
    assert not any((spool / "incoming").iterdir())


def test_a_grader_that_does_not_fit_the_submission_makes_it_invalid(spool: Path, backend: BubblewrapBackend) -> None:
    status = process(spool, backend, "batch-no-tests", {"run": "cat", "grader": "batch"})
    assert status["state"] == "invalid"
    assert status["errors"] == [{"where": "grader", "message": "the batch grader judges tests: give `tests`"}]
    status = process(spool, backend, "run-tests", {"run": "cat", "tests": [{"output": ""}], "grader": "run"})
    assert status["state"] == "invalid" and "need a judging grader" in status["errors"][0]["message"]
    status = process(
        spool, backend, "no-interactor", {"run": "cat", "tests": [{"output": ""}], "grader": "interactive"}
    )
    assert status["state"] == "invalid"
    assert status["errors"] == [
        {
            "where": "checker",
            "message": "the interactive grader needs its interactor: `checker: {type: program, run: ...}`",
        }
    ]


def test_a_registered_grader_is_picked_by_the_pipeline(
    spool: Path, backend: BubblewrapBackend, echo: EchoGrader
) -> None:
    status = process(spool, backend, "echoed", {"run": "cat", "tests": [{"output": "x"}], "grader": "echo"})
    assert (status["state"], status["outcome"], status["reason"]) == ("done", "ok", "graded by echo")
    assert status["stages"]["echo"]["status"] == "ok"
    assert "tests" not in status  # the batch grader did not run
    assert echo.calls == ["grade"]
    unknown = process(spool, backend, "unknown-now", {"run": "cat", "grader": "nope"})
    assert (
        "echo" in GRADERS and f"the known graders are {', '.join(sorted(GRADERS))}" in unknown["errors"][0]["message"]
    )


def test_a_registered_graders_problems_and_early_end_reach_it(
    spool: Path, backend: BubblewrapBackend, echo: EchoGrader
) -> None:
    refused = process(spool, backend, "refused", {"run": "cat", "args": ["refuse"], "grader": "echo"})
    assert refused["state"] == "invalid"
    assert refused["errors"] == [{"where": "args", "message": "the echo grader refuses this"}]
    broken = process(spool, backend, "broken", {"compile": "echo oops >&2; exit 1", "run": "cat", "grader": "echo"})
    assert (broken["state"], broken["outcome"]) == ("done", "compile_error")
    assert echo.calls == ["stopped compile compile_error: oops"]
