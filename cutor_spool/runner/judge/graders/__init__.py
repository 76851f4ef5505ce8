"""Graders: what running a submission means, chosen by the submission, as DMOJ's judge chooses a
grader per problem. Each is a small plugin module (`base.py` says what one is):

    run.py      the program once with its stdin (no `tests`: the default)
    batch.py    each test in its own stage, checked, scored (with `tests`: the default)
    interactive.py  each test a dialogue with the problem's interactor, in a sandbox of its own
    communication.py  a manager and N copies of the program, each in its own sandbox (CMS)
    function.py function problems: the problem's grader supplies `main`, linked with the submission
    output_only.py  output-only tasks: the submission's files are checked, nothing of it runs

To add one, write a class with `name`, `problems`, `grade` and `stopped` and add an instance to
`GRADERS`; submission.yaml's `grader` names it. See docs/judge.md, "Graders".
"""

from __future__ import annotations

from collections.abc import Mapping

from cutor_spool.runner.intake import Intake, Plan
from cutor_spool.runner.judge.graders.base import Grader, GradingContext, Stopped
from cutor_spool.runner.judge.graders.batch import BatchGrader
from cutor_spool.runner.judge.graders.communication import CommunicationGrader
from cutor_spool.runner.judge.graders.function import FunctionGrader
from cutor_spool.runner.judge.graders.interactive import InteractiveGrader
from cutor_spool.runner.judge.graders.output_only import OutputOnlyGrader
from cutor_spool.runner.judge.graders.run import RunGrader
from cutor_spool.runner.tree import Problem

__all__ = ["GRADERS", "Grader", "GradingContext", "Stopped", "checked", "choose"]

GRADERS: dict[str, Grader] = {grader.name: grader for grader in (RunGrader(), BatchGrader())}
GRADERS[InteractiveGrader.name] = InteractiveGrader()
GRADERS[CommunicationGrader.name] = CommunicationGrader()
GRADERS.update({grader.name: grader for grader in (FunctionGrader(), OutputOnlyGrader())})


def grader_name(plan: Plan) -> str:
    """The grader a submission names, else `batch` when it has tests and `run` when not."""
    return plan.submission.grader or (BatchGrader.name if plan.judged else RunGrader.name)


def choose(plan: Plan, graders: Mapping[str, Grader] = GRADERS) -> tuple[Grader | None, list[Problem]]:
    """The plan's grader, or why the submission cannot have it (an `invalid` submission)."""
    name = grader_name(plan)
    grader = graders.get(name)
    if grader is None:
        known = ", ".join(sorted(graders))
        return None, [Problem("grader", f"unknown grader {name!r}: the known graders are {known}")]
    return grader, grader.problems(plan)


def checked(intake: Intake, graders: Mapping[str, Grader] = GRADERS) -> Intake:
    """`intake` with its grader's problems too, for whoever checks a submission without running
    it (`cutor-spool validate`, `submit`): they then say what an executor would."""
    if intake.plan is None:
        return intake
    problems = choose(intake.plan, graders)[1]
    return Intake(None, (*intake.problems, *problems), intake.raw) if problems else intake
