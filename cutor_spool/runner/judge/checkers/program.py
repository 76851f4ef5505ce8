"""`program`: the problem's own checker, run in the sandbox like the submission.

Where it runs. In the slot's *aux* directory (mounted at /work for the checker's stages only), a
second tmpfs the submission's stages never see: the submission cannot plant files that the checker
reads or executes. The checker's files are copied there from the spool entry (never from the
submission's /work) before any stage has run in aux, and the checker is compiled there once.

Its protocol (per test), close to CMS's and testlib's so that existing checkers port easily:

- It is called as `run ... INPUT EXPECTED OUTPUT` with the paths `/run/cutor/input`,
  `/run/cutor/expected` (empty if the test has no expected output) and `/run/cutor/output` (the
  program's stdout), read-only; the same paths are in `$CUTOR_INPUT`, `$CUTOR_EXPECTED`,
  `$CUTOR_OUTPUT`, and the test's name in `$CUTOR_TEST`. CMS passes them in this order; a testlib
  checker wants `input output answer`: `run: ./checker "$1" "$3" "$2"`.
- Exit status 0: the output is correct. Its stdout may start with a score fraction in [0, 1]
  (CMS's convention: `1`, `0`, `0.25`); empty stdout means 1; `0` is accepted with 0 points.
- Exit status 1 (testlib's WA) or 2 (testlib's presentation error): wrong answer, score 0.
- Exit status 7 (testlib's "points"): partial; stdout must start with the fraction.
- Anything else (3 is testlib's "fail"), a signal, or a limit hit: the *checker* failed. That is an
  internal error of the test, never a verdict against the submission.
- Its stderr (the first 4 KiB) is the message shown with the verdict.

A fraction of 1 is `accepted`, anything between 0 and 1 `partial`. A fraction of 0 is `accepted`
with 0 points when the exit status is 0 (the checker passed the output and gave it nothing: DMOJ's
semantics), and `wrong_answer` with exit status 7, or with exit status 0 when the checker says
`zero_score: wrong_answer` (CMS's comparators always exit 0 and print 0 for a wrong answer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from cutor_spool.config import StageKind
from cutor_spool.errors import SpoolIOError
from cutor_spool.runner.intake import Script
from cutor_spool.runner.judge.checkers.show import excerpt
from cutor_spool.runner.judge.verdicts import CheckResult
from cutor_spool.runner.stage import StageOutput, StageStatus, signal_name
from cutor_spool.runner.stagerunner import StageRunner
from cutor_spool.runner.tree import copy_file
from cutor_spool.submission import ZeroScore

INPUT, EXPECTED, OUTPUT = "/run/cutor/input", "/run/cutor/expected", "/run/cutor/output"
ACCEPT, WRONG, PRESENTATION, POINTS = 0, 1, 2, 7
MESSAGE_LIMIT = 4096


def _fraction(stdout: bytes) -> float | None:
    """The first token of stdout as a fraction in [0, 1], or None if it is not one."""
    token = stdout.split(maxsplit=1)[0] if stdout.strip() else b""
    try:
        value = float(token)
    except ValueError:
        return None
    return value if math.isfinite(value) and 0.0 <= value <= 1.0 else None


def interpret(output: StageOutput, zero_score: ZeroScore = "accepted") -> CheckResult:
    """The checker's verdict from its exit status and output (see the module's docstring)."""
    message = output.stderr[:MESSAGE_LIMIT].decode("utf-8", "replace").strip()
    if output.status not in (StageStatus.OK, StageStatus.RUNTIME_ERROR):
        what = (
            f"was killed by {signal_name(output.signal)}"
            if output.status == StageStatus.SIGNALED and output.signal
            else f"hit a limit ({output.status})"
        )
        return CheckResult.failed(f"the checker {what}" + (f": {message}" if message else ""))
    code = output.exit_code
    if code in (WRONG, PRESENTATION):
        return CheckResult.wrong(message)
    if code not in (ACCEPT, POINTS):
        return CheckResult.failed(f"the checker failed (exit status {code})" + (f": {message}" if message else ""))
    if code == ACCEPT and not output.stdout.strip():
        return CheckResult.accepted(message)
    fraction = _fraction(output.stdout)
    if fraction is None:
        return CheckResult.failed(
            f"the checker's stdout must start with a score between 0 and 1, not {excerpt(output.stdout, 40)}"
        )
    return CheckResult.scored(fraction, message, passed=code == ACCEPT and zero_score == "accepted")


@dataclass
class ProgramChecker:
    """One submission's checker program: placed and compiled once, then run once per test."""

    runner: StageRunner
    entry: Path  # the spool entry: the checker's files are read from here, never from /work

    def prepare(self) -> StageOutput | None:
        """Copies the checker's files into aux and compiles it; the compile stage's output (None
        when there is nothing to compile). A compile that fails leaves the checker unusable."""
        plan = self.runner.plan
        slot = self.runner.sandbox.slot
        scripts = {s.file for s in (plan.checker_compile, plan.checker_run) if s is not None and s.shebang}
        for name in plan.checker_files:
            entry = plan.tree.files[name]
            try:
                copy_file(
                    self.entry,
                    name,
                    slot.aux,
                    size_limit=entry.size,
                    executable=entry.executable or name in scripts,
                    uid=slot.uid,
                    gid=slot.gid,
                )
            except OSError as exc:  # the entry changed under us: retry from a fresh intake
                raise SpoolIOError(f"checker file {name} cannot be copied: {exc}") from exc
        if plan.checker_compile is None:
            return None
        command, files = self.runner.script_command(plan.checker_compile)
        spec = self.runner.spec(
            "checker_compile",
            command,
            plan.limits[StageKind.COMPILE],
            files=files,
            workdir="aux",
            env={},
            network=False,
        )
        return self.runner.run(spec)

    def check(self, name: str, input_data: bytes, expected: bytes, actual: bytes) -> tuple[CheckResult, StageOutput]:
        plan = self.runner.plan
        run: Script | None = plan.checker_run
        assert run is not None
        command, files = self.runner.script_command(run, (INPUT, EXPECTED, OUTPUT))
        spec = self.runner.spec(
            f"tests/{name}/checker",
            command,
            plan.limits[StageKind.CHECKER],
            files={**files, "input": input_data, "expected": expected, "output": actual},
            workdir="aux",
            env={"CUTOR_INPUT": INPUT, "CUTOR_EXPECTED": EXPECTED, "CUTOR_OUTPUT": OUTPUT, "CUTOR_TEST": name},
            network=False,
        )
        output = self.runner.run(spec)
        return interpret(output, self.runner.plan.submission.checker_spec().zero_score), output
