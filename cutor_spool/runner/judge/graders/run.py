"""The `run` grader: a plain run, the program once with the submission's stdin and args.

Nothing is judged: the run stage's status is the outcome. A submission without `tests` gets this
grader unless it names another.
"""

from __future__ import annotations

from cutor_spool.config import StageKind
from cutor_spool.documents.states import State
from cutor_spool.runner.intake import Plan
from cutor_spool.runner.judge.graders.base import GradingContext, Stopped
from cutor_spool.runner.results import STAGE_OUTCOME
from cutor_spool.runner.tree import Problem, read_file


class RunGrader:
    name = "run"

    def problems(self, plan: Plan) -> list[Problem]:
        if not plan.judged:
            return []
        return [Problem("grader", "the run grader runs the program once: `tests` need a judging grader (batch)")]

    def grade(self, context: GradingContext) -> None:
        plan, runner, reporter = context.plan, context.runner, context.reporter
        sub = plan.submission
        assert plan.run is not None
        reporter.transition(State.RUNNING, defer=True)
        stdin = plan.stdin
        if sub.stdin_file is not None:  # from the spool entry, never from /work (the job's by now)
            stdin = read_file(context.entry, sub.stdin_file, plan.tree.files[sub.stdin_file].size)
        command, files = runner.script_command(plan.run, tuple(sub.args))
        output = runner.run(runner.spec("run", command, plan.limits[StageKind.RUN], stdin=stdin, files=files))
        reporter.stage("run", output)
        reporter.finish(State.DONE, STAGE_OUTCOME[output.status], message=output.message)

    def stopped(self, context: GradingContext, stop: Stopped) -> None:
        """A plain run's result is complete without more: dependencies.json or compile.json and
        the final state say why it ended."""
