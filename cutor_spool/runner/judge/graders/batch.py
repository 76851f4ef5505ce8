"""The `batch` grader: the judge as it was first built (DMOJ's standard grader).

Each test runs in its own sandboxed stage with its input on stdin and is checked (`grading.py`);
`report.py` turns what happened into tests/<name>.json, events, status.json, the score and
junit.xml. A submission with `tests` gets this grader unless it names another.
"""

from __future__ import annotations

from cutor_spool.atomic import write_bytes
from cutor_spool.runner.intake import Plan
from cutor_spool.runner.judge.cases import TestData
from cutor_spool.runner.judge.graders.base import GradingContext, Stopped
from cutor_spool.runner.judge.grading import grade
from cutor_spool.runner.judge.junit import junit_not_judged
from cutor_spool.runner.judge.report import JudgeReport
from cutor_spool.runner.tree import Problem


class BatchGrader:
    name = "batch"

    def problems(self, plan: Plan) -> list[Problem]:
        if plan.judged:
            return []
        return [Problem("grader", "the batch grader judges tests: give `tests`")]

    def grade(self, context: GradingContext) -> None:
        report = JudgeReport(context.reporter, context.plan)
        for event in grade(context.runner, TestData(context.plan, context.entry)):
            report.consume(event)
        report.finish()

    def stopped(self, context: GradingContext, stop: Stopped) -> None:
        """A judged submission's junit.xml when it ends before its tests: CI shows it failing."""
        reporter = context.reporter
        data = junit_not_judged(
            reporter.claim.entry_id,
            context.plan.submission,
            stop.step,
            str(stop.outcome),
            stop.message,
            stop.log,
            stop.seconds,
        )
        write_bytes(reporter.dir / "junit.xml", data)
