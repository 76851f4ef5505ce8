"""The `output_only` grader: the submission is a set of output files, one per test; nothing of it
is run (no compile, no run stage: IOI's and CMS's output-only tasks).

The output for test NAME is the submission's file `outputs/NAME.out`. Each is checked against its
test with the problem's checker (built-in or a program, which gets the test's input and expected
output as usual); points and subtasks are summed as for `batch`. A missing file is a
`wrong_answer` (0 points) saying so; a file larger than the test's `output` limit is an
`output_limit`, not read. A symlink, a FIFO or a file with several links in the directory makes
the whole submission `invalid` at intake, as in every submission (runner/tree.py).
"""

from __future__ import annotations

from cutor_spool.errors import SpoolIOError
from cutor_spool.runner.intake import Plan
from cutor_spool.runner.judge.cases import TestData
from cutor_spool.runner.judge.graders.base import GradingContext, Stopped
from cutor_spool.runner.judge.graders.batch import BatchGrader
from cutor_spool.runner.judge.grading import Produce, grade
from cutor_spool.runner.judge.report import JudgeReport
from cutor_spool.runner.judge.verdicts import Case, CaseResult, Verdict
from cutor_spool.runner.stage import StageOutput, StageStatus
from cutor_spool.runner.tree import Problem, read_file


def output_name(test: str) -> str:
    return f"outputs/{test}.out"


class OutputOnlyGrader:
    name = "output_only"

    def problems(self, plan: Plan) -> list[Problem]:
        problems = []
        if not plan.judged:
            problems.append(Problem("grader", "an output-only task checks files against tests: give `tests`"))
        sub = plan.submission
        if plan.compile is not None or sub.run is not None:
            problems.append(
                Problem("grader", "an output-only task runs nothing of the submission: remove `compile` and `run`")
            )
        return problems

    def grade(self, context: GradingContext) -> None:
        report = JudgeReport(context.reporter, context.plan)
        for event in grade(context.runner, TestData(context.plan, context.entry), self._files(context)):
            report.consume(event)
        report.finish()

    def stopped(self, context: GradingContext, stop: Stopped) -> None:
        BatchGrader().stopped(context, stop)

    @staticmethod
    def _files(context: GradingContext) -> Produce:
        plan, entry = context.plan, context.entry

        def read(case: Case, stdin: bytes) -> StageOutput | CaseResult:
            name = output_name(case.name)
            found = plan.tree.files.get(name)
            if found is None:
                return CaseResult(case, Verdict.WRONG_ANSWER, 0.0, f"no output file: the submission has no {name}")
            if found.size > case.limits.output:
                message = f"{name} is {found.size} bytes, over the output limit of {case.limits.output} bytes"
                return CaseResult(case, Verdict.OUTPUT_LIMIT, 0.0, message)
            try:
                data = read_file(entry, name, found.size)
            except OSError as exc:  # changed since intake: retried from a fresh one
                raise SpoolIOError(f"output file {name} cannot be read: {exc}") from exc
            return StageOutput(
                stage=f"tests/{case.name}", status=StageStatus.OK, exit_code=0, signal=None, stdout=data,
                stderr=b"", output=b"", stdout_truncated=False, stderr_truncated=False, cpu_time=0.0,
                wall_time=0.0, memory=0, limits=case.limits, message=f"read from {name}",
            )  # fmt: skip

        return read
