"""The `interactive` grader: each test is a dialogue between the submission and the problem's
interactor (Codeforces' and testlib's interactive problems; DOMjudge's `interactive` validators).

The interactor is the problem's `checker` program (`type: program`: its `files`, `compile`, `run`
and `limits.checker`), so it is kept out of /work and placed as a checker is. It runs in a second
slot's sandbox (another uid, another /work and /run/cutor, its own cgroup and limits): the
submission can neither read its files nor signal it. `runner/judge/interaction.py` runs one test
and decides its verdict; `report.py` writes it, as for `batch`, with the interactor's run and its
transcript in tests/<name>.json.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

from cutor_spool.config import StageKind
from cutor_spool.errors import SandboxError
from cutor_spool.runner.intake import Plan
from cutor_spool.runner.judge.batches import BatchPlan
from cutor_spool.runner.judge.cases import TestData
from cutor_spool.runner.judge.checkers.program import ProgramChecker
from cutor_spool.runner.judge.graders.base import GradingContext
from cutor_spool.runner.judge.graders.batch import BatchGrader
from cutor_spool.runner.judge.grading import CheckerCompiled, Event, TestJudged, TestStarted
from cutor_spool.runner.judge.interaction import (
    EXPECTED,
    IDLENESS,
    INPUT,
    TRANSCRIPT,
    Dialogue,
    clear_transcript,
    converse,
    interpret,
    read_transcript,
    verdict,
)
from cutor_spool.runner.judge.report import JudgeReport
from cutor_spool.runner.judge.verdicts import Case, CaseResult, CheckResult, Verdict, stage_feedback
from cutor_spool.runner.sandbox import Sandbox
from cutor_spool.runner.stage import StageOutput, StageSpec
from cutor_spool.runner.stagerunner import StageRunner
from cutor_spool.runner.tree import Problem
from cutor_spool.submission import CheckerKind


class InteractiveGrader(BatchGrader):
    name = "interactive"

    def problems(self, plan: Plan) -> list[Problem]:
        problems = []
        if not plan.judged:
            problems.append(Problem("grader", "the interactive grader judges tests: give `tests`"))
        if plan.submission.checker_spec().type != CheckerKind.PROGRAM:
            problems.append(
                Problem("checker", "the interactive grader needs its interactor: `checker: {type: program, run: ...}`")
            )
        return problems

    def grade(self, context: GradingContext) -> None:
        if context.helper_sandbox is None:
            raise SandboxError("this executor cannot give an interactor a sandbox of its own")
        report = JudgeReport(context.reporter, context.plan)
        with context.helper_sandbox(f"{context.reporter.claim.entry_id}/interactor") as box:
            helper = StageRunner(context.plan, box, context.reporter, context.cancel, context.runner.env)
            for event in dialogues(context.runner, helper, TestData(context.plan, context.entry), one_test):
                report.consume(event)
        report.finish()


TestRun = Callable[[StageRunner, StageRunner, TestData, Case], CaseResult]


def dialogues(runner: StageRunner, helper: StageRunner, data: TestData, run_test: TestRun) -> Iterator[Event]:
    """As grading.grade, each test a dialogue (`run_test`): compile the interactor (or manager) in
    `helper`'s sandbox once, then the tests in order (subtask skips, short_circuit as `batch`)."""
    compiled = ProgramChecker(helper, data.entry).prepare()
    unusable = None
    if compiled is not None:
        yield CheckerCompiled(compiled)
        if not compiled.ok:
            unusable = f"the interactor did not compile ({stage_feedback(compiled)})"
    sub = runner.plan.submission
    batches, stopped = BatchPlan(sub), None
    cases = data.cases()
    for case in cases:
        skipped = stopped or batches.skip(case.name)
        if unusable is not None or skipped is not None:
            verdict_ = Verdict.INTERNAL_ERROR if unusable is not None else Verdict.SKIPPED
            result = CaseResult(case, verdict_, 0.0, unusable or skipped or "")
        else:
            yield TestStarted(case, len(cases))
            result = run_test(runner, helper, data, case)
        batches.record(result)
        yield TestJudged(result)
        if sub.short_circuit and not result.passed and stopped is None:
            stopped = f"not run: test {case.name} was not accepted ({result.verdict}) and short_circuit is on"


def helper_spec(helper: StageRunner, data: TestData, case: Case, args: tuple[str, ...], **env: str) -> StageSpec:
    """The interactor's (or manager's) stage for a test: in `helper`'s checker directory, the test's
    data in its /run/cutor, limits.checker with the wall time at least the test's plus 1 s."""
    plan = helper.plan
    assert plan.checker_run is not None
    checker = plan.limits[StageKind.CHECKER]
    limits = dataclasses.replace(checker, wall_time=max(checker.wall_time, case.limits.wall_time + 1.0))
    command, files = helper.script_command(plan.checker_run, args)
    return helper.spec(
        f"tests/{case.name}/interactor",
        command,
        limits,
        files={**files, "input": data.input(case), "expected": data.expected(case) or b""},
        workdir="aux",
        env={"CUTOR_INPUT": INPUT, "CUTOR_EXPECTED": EXPECTED, "CUTOR_TEST": case.name, **env},
        network=False,
    )


def case_result(
    case: Case, dialogue: Dialogue, judge: Callable[[StageOutput], CheckResult] = interpret, **more: Any
) -> CaseResult:
    """The test's result: its verdict, and the interactor's run and transcript for tests/<name>.json."""
    check = verdict(dialogue, IDLENESS, judge)
    details = {
        "interactor": dialogue.interactor.document(),
        "transcript": dialogue.transcript.decode("utf-8", "replace"),
        "transcript_truncated": dialogue.transcript_truncated,
        **more,
    }
    return CaseResult(case, check.verdict, check.fraction, check.message, dialogue.submission, None, details)


def one_test(runner: StageRunner, helper: StageRunner, data: TestData, case: Case) -> CaseResult:
    plan = runner.plan
    assert plan.run is not None
    command, files = runner.script_command(plan.run, tuple(plan.submission.args))
    submission = runner.spec(f"tests/{case.name}", command, case.limits, files=files)
    interactor = helper_spec(helper, data, case, (INPUT, TRANSCRIPT, EXPECTED), CUTOR_TRANSCRIPT=TRANSCRIPT)
    aux = helper.sandbox.slot.aux
    clear_transcript(aux)
    runner.cancel.check()
    boxes: tuple[Sandbox, Sandbox] = (runner.sandbox, helper.sandbox)
    try:
        sub, inter, idle = converse(boxes, (submission, interactor), runner.cancel.event, IDLENESS)
    except NotImplementedError as exc:  # a backend that cannot wire two stages (Docker)
        raise SandboxError(str(exc)) from exc
    runner.cancel.check()
    return case_result(case, Dialogue((sub,), inter, idle, *read_transcript(aux)))
