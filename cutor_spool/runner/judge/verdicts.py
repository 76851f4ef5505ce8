"""Verdicts are values: what a test got, and why, as data the reporting side consumes.

A test's verdict comes from its run stage first (a program that crashed or ran out of time is not
compared at all), then from the checker. `internal_error` is never a verdict against the
submission: it says the judge could not decide (the checker crashed, or did not compile), and the
submission ends in state `error` instead of `done`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cutor_spool.documents.stage import Verdict as Verdict  # noqa: PLC0414 - re-exported from its old home
from cutor_spool.limits import Limits
from cutor_spool.runner.stage import StageOutput, StageStatus, signal_name
from cutor_spool.units import format_size

# What a run stage that did not end `ok` means for its test. A wall-clock kill is a time limit too
# (a program that sleeps or blocks is as late as one that spins); tests/<name>.json keeps the
# stage's own status for whoever needs the difference.
STAGE_VERDICT = {
    StageStatus.RUNTIME_ERROR: Verdict.RUNTIME_ERROR,
    StageStatus.SIGNALED: Verdict.RUNTIME_ERROR,
    StageStatus.SECURITY_VIOLATION: Verdict.RUNTIME_ERROR,  # as DMOJ: a disallowed call is a runtime error
    StageStatus.TIME_LIMIT: Verdict.TIME_LIMIT,
    StageStatus.WALL_TIME_LIMIT: Verdict.TIME_LIMIT,
    StageStatus.MEMORY_LIMIT: Verdict.MEMORY_LIMIT,
    StageStatus.OUTPUT_LIMIT: Verdict.OUTPUT_LIMIT,
    StageStatus.INTERNAL_ERROR: Verdict.INTERNAL_ERROR,
}


@dataclass(frozen=True)
class CheckResult:
    """What a checker decided about one output: a verdict, a score fraction in [0, 1], a message."""

    verdict: Verdict
    fraction: float
    message: str = ""

    @classmethod
    def accepted(cls, message: str = "") -> CheckResult:
        return cls(Verdict.ACCEPTED, 1.0, message)

    @classmethod
    def wrong(cls, message: str) -> CheckResult:
        return cls(Verdict.WRONG_ANSWER, 0.0, message)

    @classmethod
    def failed(cls, message: str) -> CheckResult:
        """The checker itself failed: no verdict on the submission."""
        return cls(Verdict.INTERNAL_ERROR, 0.0, message)

    @classmethod
    def scored(cls, fraction: float, message: str = "", *, passed: bool = False) -> CheckResult:
        """A fraction as a verdict. `passed`: the checker said the output is correct (exit 0), so a
        fraction of 0 is `accepted` with 0 points (DMOJ's semantics), not a wrong answer."""
        if fraction >= 1.0:
            return cls(Verdict.ACCEPTED, 1.0, message)
        if fraction <= 0.0:
            return cls(Verdict.ACCEPTED if passed else Verdict.WRONG_ANSWER, 0.0, message)
        return cls(Verdict.PARTIAL, fraction, message)


@dataclass(frozen=True)
class Case:
    """One test to judge: its place, its weight and its resolved limits (the data is read lazily)."""

    index: int
    name: str
    points: float
    limits: Limits


@dataclass(frozen=True)
class CaseResult:
    case: Case
    verdict: Verdict
    fraction: float
    feedback: str = ""  # the checker's message, or why the verdict was given without one
    output: StageOutput | None = None  # the program's run (None: the test did not run)
    checker: StageOutput | None = None  # the checker program's run, when there is one
    details: Mapping[str, Any] | None = None  # more fields for tests/<name>.json (an interactor's)
    generated: str | None = None  # a generated input: `generated` now, or `cached` (generated.py)

    @property
    def name(self) -> str:
        return self.case.name

    @property
    def score(self) -> float:
        return self.case.points * self.fraction

    @property
    def passed(self) -> bool:
        return self.verdict == Verdict.ACCEPTED


def stage_feedback(output: StageOutput) -> str:
    """Why a run stage that did not end `ok` got its verdict, in a line."""
    limits = output.limits
    status = output.status
    if status == StageStatus.TIME_LIMIT:
        return f"CPU time limit of {limits.cpu_time:g}s exceeded ({output.cpu_time:.3f}s)"
    if status == StageStatus.WALL_TIME_LIMIT:
        return f"wall time limit of {limits.wall_time:g}s exceeded"
    if status == StageStatus.MEMORY_LIMIT:
        return f"memory limit of {limits.memory} bytes exceeded"
    if status == StageStatus.OUTPUT_LIMIT:
        return f"output limit of {limits.output} bytes exceeded"
    if status == StageStatus.SIGNALED and output.signal:
        return (output.message or f"killed by {signal_name(output.signal)}") + _address_space_note(limits)
    if status == StageStatus.RUNTIME_ERROR:
        return f"exit status {output.exit_code}" + _address_space_note(limits)
    return output.message or str(status)


def _address_space_note(limits: Limits) -> str:
    """A crash under RLIMIT_AS is often a failed allocation, which the judge cannot tell apart from
    any other crash: it stays a runtime error, with this hint."""
    if not limits.address_space:
        return ""
    return f" (under an address-space limit of {format_size(limits.address_space)}: an allocation past it fails)"
