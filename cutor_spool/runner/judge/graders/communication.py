"""The `communication` grader: CMS's communication tasks. Each test runs the problem's manager
(the `checker` program, placed and compiled as an interactor is) and `processes` copies of the
submission, each in a sandbox of its own, wired by FIFOs the manager opens by name
(`runner/judge/communication.py`). The manager judges as a checker program does (exit 0 with a
fraction on stdout, CMS's managers' way; 1 or 2 wrong; 7 points), after the processes' own ends
(interaction.verdict). Copy i gets its index as its last argument and in $CUTOR_PROCESS.
"""

from __future__ import annotations

import dataclasses
from contextlib import ExitStack

from cutor_spool.config import StageKind
from cutor_spool.errors import SandboxError
from cutor_spool.runner.intake import Plan
from cutor_spool.runner.judge.cases import TestData
from cutor_spool.runner.judge.checkers.program import interpret as interpret_checker
from cutor_spool.runner.judge.communication import communicate, copy_work, fifo_names
from cutor_spool.runner.judge.graders.base import GradingContext
from cutor_spool.runner.judge.graders.interactive import InteractiveGrader, case_result, dialogues, helper_spec
from cutor_spool.runner.judge.interaction import IDLENESS, INPUT, Dialogue
from cutor_spool.runner.judge.report import JudgeReport
from cutor_spool.runner.judge.verdicts import Case, CaseResult, Verdict
from cutor_spool.runner.sandbox import Sandbox
from cutor_spool.runner.stagerunner import StageRunner
from cutor_spool.runner.tree import Problem


class CommunicationGrader(InteractiveGrader):
    name = "communication"

    def problems(self, plan: Plan) -> list[Problem]:
        renamed = {"interactive grader": "communication grader", "interactor": "manager"}
        problems = []
        for problem in super().problems(plan):
            message = problem.message
            for before, after in renamed.items():
                message = message.replace(before, after)
            problems.append(Problem(problem.where, message))
        return problems

    def grade(self, context: GradingContext) -> None:
        if context.helper_sandbox is None:
            raise SandboxError("this executor cannot give a manager a sandbox of its own")
        plan, entry_id = context.plan, context.reporter.claim.entry_id
        report = JudgeReport(context.reporter, plan)
        with ExitStack() as stack:
            manager = stack.enter_context(context.helper_sandbox(f"{entry_id}/manager"))
            others = [
                stack.enter_context(context.helper_sandbox(f"{entry_id}/process-{i}"))
                for i in range(1, plan.submission.processes)
            ]
            for box in others:
                copy_work(context.sandbox, box, plan.limits[StageKind.COMPILE], context.cancel.event)
            context.cancel.check()
            helper = StageRunner(plan, manager, context.reporter, context.cancel, context.runner.env)
            session = _Sessions([context.runner, *(dataclasses.replace(context.runner, sandbox=b) for b in others)])
            for event in dialogues(context.runner, helper, TestData(plan, context.entry), session.run):
                report.consume(event)
        report.finish()


@dataclasses.dataclass
class _Sessions:
    runners: list[StageRunner]  # one per process, each with its own sandbox

    def run(self, runner: StageRunner, helper: StageRunner, data: TestData, case: Case) -> CaseResult:
        plan = runner.plan
        assert plan.run is not None
        specs = []
        for i, process in enumerate(self.runners):
            command, files = process.script_command(plan.run, (*plan.submission.args, str(i)))
            env = {**plan.submission.env, "CUTOR_PROCESS": str(i)}
            specs.append(process.spec(f"tests/{case.name}/process-{i}", command, case.limits, files=files, env=env))
        specs[0] = dataclasses.replace(specs[0], name=f"tests/{case.name}")
        names = tuple(f"/work/{name}" for name in fifo_names(len(specs)))
        manager = dataclasses.replace(helper_spec(helper, data, case, (INPUT, *names)), stdin=data.input(case))
        boxes: list[Sandbox] = [process.sandbox for process in self.runners]
        runner.cancel.check()
        try:
            outcome = communicate(boxes, specs, (helper.sandbox, manager), runner.cancel.event, IDLENESS)
        except NotImplementedError as exc:  # a backend that cannot wire stages (Docker)
            raise SandboxError(str(exc)) from exc
        runner.cancel.check()
        if not outcome.processes:
            why = "the manager did not open all its FIFOs: it ended, or sat idle, first"
            return CaseResult(
                case, Verdict.INTERNAL_ERROR, 0.0, why, details={"interactor": outcome.manager.document()}
            )
        zero = plan.submission.checker_spec().zero_score
        dialogue = Dialogue(outcome.processes, outcome.manager, outcome.idle, stopped=outcome.stopped)
        more = {"processes": [out.document() for out in outcome.processes[1:]]}
        return case_result(case, dialogue, lambda out: interpret_checker(out, zero), **more)
