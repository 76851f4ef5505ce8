"""The `function` grader: function problems (CMS's graders, DMOJ's signature grading). The
submission provides functions only; the problem's `function` program supplies `main`.

1. The submission's own `compile` builds its part (C/C++: an object file, `gcc -c sol.c`); it
   never sees the grader: the grader's files are problem data, kept out of /work.
2. The grader's `compile` runs in the slot's aux directory (programs.py), which no stage of the
   submission can reach: compile-time constructs of the submission (`#include "/abs/path"`,
   `.incbin`) cannot read its source, since that was never anywhere they could look.
3. The files it `provides` (an object file; for Python, the grader's module) are handed to the
   `link` stage, in /work, at /run/cutor/NAME (read-only), and to every test's run stage there too.
   A missing function is a link error: the submission's `compile_error`, with the linker's message.
   What enters the submission's process is the grader's machine code (its own binary holds it
   anyway) or, for an interpreted grader, its source: a Python grader imported with the
   submission runs in the same process, so it must hold nothing secret (the tests never are in it).
4. The tests are then judged as by `batch`.

A grader that does not compile, or does not make what it provides, is the problem's fault: every
test is an `internal_error` and the submission ends in state `error`, as with a broken checker.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from cutor_spool.config import StageKind
from cutor_spool.documents.states import Outcome, State
from cutor_spool.runner.intake import Plan
from cutor_spool.runner.judge.cases import TestData
from cutor_spool.runner.judge.graders.base import GradingContext, Stopped
from cutor_spool.runner.judge.graders.batch import BatchGrader
from cutor_spool.runner.judge.grading import Produce, TestJudged, grade
from cutor_spool.runner.judge.programs import AuxPrograms, problem_script
from cutor_spool.runner.judge.report import JudgeReport
from cutor_spool.runner.judge.verdicts import Case, CaseResult, Verdict, stage_feedback
from cutor_spool.runner.stage import StageOutput
from cutor_spool.runner.tree import Problem, read_file
from cutor_spool.submission import ProblemProgram


class FunctionGrader:
    name = "function"

    def problems(self, plan: Plan) -> list[Problem]:
        sub = plan.submission
        problems = []
        if not plan.judged:
            problems.append(Problem("grader", "the function grader judges tests: give `tests`"))
        if sub.function is None:
            problems.append(Problem("function", "`grader: function` needs the problem's `function` (its main)"))
        elif sub.function.run is not None:
            problems.append(Problem("function.run", "the submission's `run` runs the linked program"))
        return problems

    def grade(self, context: GradingContext) -> None:
        spec = context.plan.submission.function
        assert spec is not None
        programs = AuxPrograms(context.runner, context.entry)
        provided, failure = self._build(context, programs, spec)
        report = JudgeReport(context.reporter, context.plan)
        data = TestData(context.plan, context.entry)
        if failure is not None:
            for case in data.cases():
                report.consume(TestJudged(CaseResult(case, Verdict.INTERNAL_ERROR, 0.0, failure)))
            report.finish()
            return
        if not self._link(context, spec, provided):
            return
        for event in grade(context.runner, data, self._runs(context, provided), programs):
            report.consume(event)
        report.finish()

    def stopped(self, context: GradingContext, stop: Stopped) -> None:
        BatchGrader().stopped(context, stop)

    @staticmethod
    def _build(
        context: GradingContext, programs: AuxPrograms, spec: ProblemProgram
    ) -> tuple[dict[str, bytes], str | None]:
        """The grader compiled in aux, and what it provides (read from aux, never from /work)."""
        programs.place()
        script = problem_script(spec.compile, context.plan.program_files)
        if script is not None:
            output = programs.stage("function_compile", spec, script)
            context.reporter.stage("function_compile", output)
            if not output.ok:
                return {}, f"the problem's grader did not compile ({stage_feedback(output)})"
        provided = {}
        slot = context.sandbox.slot
        for name in spec.provides:
            try:
                provided[PurePosixPath(name).name] = read_file(slot.aux, name, programs.limits(spec).file_size)
            except OSError as exc:
                return {}, f"the problem's grader provides {name}, which its compile did not make ({exc})"
        return provided, None

    @staticmethod
    def _link(context: GradingContext, spec: ProblemProgram, provided: dict[str, bytes]) -> bool:
        """The submission's part linked with the grader's, in /work: False (and the submission
        ended with `compile_error`) if it does not link."""
        script = problem_script(spec.link, ())
        if script is None:
            return True
        runner, reporter = context.runner, context.reporter
        command, files = runner.script_command(script)
        limits = context.plan.limits[StageKind.COMPILE]
        output = runner.run(runner.spec("link", command, limits, files={**provided, **files}))
        reporter.stage("link", output)
        reporter.event("linked", success=output.ok)
        if output.ok:
            return True
        message = (output.stderr or output.stdout).decode("utf-8", "replace").strip()[-500:]
        stop = Stopped("link", Outcome.COMPILE_ERROR, message, output.stderr, output.wall_time)
        reporter.note(success=False)  # status.json's "did it compile": linking is part of it
        BatchGrader().stopped(context, stop)
        reporter.finish(State.DONE, Outcome.COMPILE_ERROR, message=message)
        return False

    @staticmethod
    def _runs(context: GradingContext, provided: dict[str, bytes]) -> Produce:
        runner, plan = context.runner, context.plan
        assert plan.run is not None
        command, files = runner.script_command(plan.run, tuple(plan.submission.args))
        files = {**provided, **files}

        def run(case: Case, stdin: bytes) -> StageOutput:
            return runner.run(runner.spec(f"tests/{case.name}", command, case.limits, stdin=stdin, files=files))

        return run
