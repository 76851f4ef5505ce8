"""Grading: runs the tests and yields what happened, as events; `report.py` consumes them.

Computing and reporting stay apart (as in DMOJ's judge): this module never writes a result file,
so what it decides can be followed, and tested, as a sequence of values.

Per test: the program runs in its own sandboxed stage (the compiled /work, the test's input on
stdin, the test's limits); a run that did not end `ok` gets its verdict from the stage's status
without being compared; otherwise the checker decides. Tests run in order; /work carries over from
one test to the next (as in DMOJ), /tmp does not. With `short_circuit`, the tests after the first
one that is not accepted are `skipped`. Inside subtasks, tests that can no longer change a score
are `skipped` too (`batches.py`: all-or-nothing subtasks, failed prerequisites).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from cutor_spool.runner.judge.batches import BatchPlan
from cutor_spool.runner.judge.cases import TestData
from cutor_spool.runner.judge.checkers import BUILTIN
from cutor_spool.runner.judge.checkers.program import ProgramChecker
from cutor_spool.runner.judge.generated import Generator
from cutor_spool.runner.judge.programs import AuxPrograms
from cutor_spool.runner.judge.verdicts import STAGE_VERDICT, Case, CaseResult, Verdict, stage_feedback
from cutor_spool.runner.stage import StageOutput
from cutor_spool.runner.stagerunner import StageRunner
from cutor_spool.submission import CheckerKind, CheckerSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckerCompiled:
    output: StageOutput


@dataclass(frozen=True)
class TestStarted:
    __test__ = False  # not a pytest class, whatever its name

    case: Case
    total: int


@dataclass(frozen=True)
class TestJudged:
    __test__ = False

    result: CaseResult


Event = CheckerCompiled | TestStarted | TestJudged


# How a test's output is had: by running the submission (the default), or otherwise (an
# output-only task reads a file of the submission); a CaseResult when there is no output to check.
Produce = Callable[[Case, bytes], "StageOutput | CaseResult"]


def grade(
    runner: StageRunner, data: TestData, produce: Produce | None = None, programs: AuxPrograms | None = None
) -> Iterator[Event]:
    """`produce`: how a test's output is had (default: a run); `programs`: the problem's programs
    in aux, when a grader placed them already."""
    sub = runner.plan.submission
    entry_id = runner.reporter.claim.entry_id
    spec = sub.checker_spec()
    cases = data.cases()
    programs = programs or AuxPrograms(runner, data.entry)
    programs.place()  # the problem's files go into aux before any stage has run there
    program: ProgramChecker | None = None
    unusable: str | None = None  # why no test can be judged at all
    if spec.type == CheckerKind.PROGRAM:
        program = ProgramChecker(runner, data.entry)
        compiled = program.prepare()
        if compiled is not None:
            yield CheckerCompiled(compiled)
            if not compiled.ok:
                unusable = f"the checker did not compile ({stage_feedback(compiled)})"
                log.warning("%s: %s", entry_id, unusable)
    produce = produce or _runs(runner)
    generator = Generator(programs) if sub.generator is not None else None
    stopped: str | None = None
    batches = BatchPlan(sub)
    for case in cases:
        if unusable is not None:
            yield TestJudged(CaseResult(case, Verdict.INTERNAL_ERROR, 0.0, unusable))
            continue
        skipped = stopped or batches.skip(case.name)
        if skipped is not None:
            result = CaseResult(case, Verdict.SKIPPED, 0.0, skipped)
            batches.record(result)
            yield TestJudged(result)
            continue
        yield TestStarted(case, len(cases))
        result = _judge(case, data, generator, produce, program, spec)
        log.debug("%s: test %s: %s %s", entry_id, case.name, result.verdict, result.feedback)
        batches.record(result)
        yield TestJudged(result)
        if sub.short_circuit and not result.passed:
            stopped = f"not run: test {case.name} was not accepted ({result.verdict}) and short_circuit is on"


def _runs(runner: StageRunner) -> Produce:
    """The submission's run script, in its own stage per test, the input on stdin."""
    plan = runner.plan
    assert plan.run is not None
    command, files = runner.script_command(plan.run, tuple(plan.submission.args))

    def run(case: Case, stdin: bytes) -> StageOutput:
        return runner.run(runner.spec(f"tests/{case.name}", command, case.limits, stdin=stdin, files=files))

    return run


def _judge(
    case: Case,
    data: TestData,
    generator: Generator | None,
    produce: Produce,
    program: ProgramChecker | None,
    spec: CheckerSpec,
) -> CaseResult:
    args = data.generate(case)
    generated = None
    if args is not None:
        assert generator is not None
        made, generated = generator.input(case.name, args)
        if made is None:
            return CaseResult(case, Verdict.INTERNAL_ERROR, 0.0, generated)
        stdin = made
    else:
        stdin = data.input(case)
    output = produce(case, stdin)
    if isinstance(output, CaseResult):
        return replace(output, generated=generated)
    if not output.ok:
        return CaseResult(
            case, STAGE_VERDICT[output.status], 0.0, stage_feedback(output), output, None, generated=generated
        )
    expected = data.expected(case) or b""
    checker_output = None
    if program is not None:
        check, checker_output = program.check(case.name, stdin, expected, output.stdout)
    else:
        check = BUILTIN[spec.type](expected, output.stdout, spec)
    return CaseResult(case, check.verdict, check.fraction, check.message, output, checker_output, generated=generated)
