"""Judge mode: a submission with `tests` is compiled once (by the pipeline), then each test runs in
its own sandboxed stage and is checked; verdicts, subtasks and a score come out, with the seeds'
message flow and a JUnit report. See docs/judge.md.

    cases.py      the tests and their data, read from the spool entry one at a time
    checkers/     exact, lines, tokens, floats (pure), and the sandboxed checker program
    verdicts.py   verdicts and results as values
    grading.py    runs the tests and yields events
    scoring.py    fractions -> subtask and submission scores, outcome (pure)
    report.py     consumes events: status.json, events.jsonl, tests/<name>.json
    junit.py      result/junit.xml
"""

from __future__ import annotations

from cutor_spool.runner.judge.cases import TestData
from cutor_spool.runner.judge.grading import grade
from cutor_spool.runner.judge.report import JudgeReport
from cutor_spool.runner.pipeline import StageRunner


def judge_submission(runner: StageRunner) -> None:
    """The pipeline's `Judge` hook: called after a successful compile (or none)."""
    report = JudgeReport(runner.reporter, runner.plan)
    for event in grade(runner, TestData(runner.plan, runner.reporter.claim.path)):
        report.consume(event)
    report.finish()
