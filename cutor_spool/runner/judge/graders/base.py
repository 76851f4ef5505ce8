"""What a grader is, and what it is given.

A grader decides what running a submission means once its dependencies are installed and it has
compiled: run it once (`run`), judge it test by test (`batch`), and, later, wire it to an
interactor, supply its `main`, or check the files it hands in. The pipeline is the same for all of
them; it asks the plan for its grader once (`graders/__init__.py`) and hands it a `GradingContext`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cutor_spool.documents.states import Outcome
from cutor_spool.runner.intake import Plan
from cutor_spool.runner.results import Reporter
from cutor_spool.runner.sandbox import Sandbox
from cutor_spool.runner.stagerunner import StageRunner
from cutor_spool.runner.tree import Problem
from cutor_spool.watcher.cancel import Cancelled


@dataclass(frozen=True)
class GradingContext:
    """Everything a grader may use: the stage runner (every sandboxed stage goes through it; its
    sandbox is there for a grader that needs more than one process at a time), the reporter (stage
    documents, events, transitions, the final state), the plan, the cancel token, and the claimed
    spool entry (test data is read from it by path, never from /work, which the job controls)."""

    runner: StageRunner
    entry: Path
    # Another slot's fresh sandbox (its own uid, /work and /run/cutor), for a grader that runs a
    # trusted program beside the submission (an interactor); None where there is none to give.
    helper_sandbox: Callable[[str], AbstractContextManager[Sandbox]] | None = None

    @property
    def plan(self) -> Plan:
        return self.runner.plan

    @property
    def reporter(self) -> Reporter:
        return self.runner.reporter

    @property
    def cancel(self) -> Cancelled:
        return self.runner.cancel

    @property
    def sandbox(self) -> Sandbox:
        return self.runner.sandbox


@dataclass(frozen=True)
class Stopped:
    """The submission ended before it was graded (its dependencies failed or it did not compile):
    the step, its outcome and message, and the step's log and duration for reports that show it."""

    step: str
    outcome: Outcome
    message: str
    log: bytes = b""
    seconds: float = 0.0


class Grader(Protocol):
    """A grader plugin. `name` is what submission.yaml's `grader` says."""

    name: str

    def problems(self, plan: Plan) -> list[Problem]:
        """What makes this submission unfit for this grader (an `invalid` submission): checked
        before a slot is taken."""
        ...

    def grade(self, context: GradingContext) -> None:
        """Runs and judges the compiled submission and ends it (`context.reporter.finish`).
        Verdicts are values written to the result; exceptions are for failures of the system."""
        ...

    def stopped(self, context: GradingContext, stop: Stopped) -> None:
        """Called when the submission ends before `grade`; writes what this grader's readers
        expect to find anyway (batch: a failing junit.xml). The pipeline then ends it."""
        ...
