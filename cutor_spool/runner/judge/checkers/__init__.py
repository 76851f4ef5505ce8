"""Checkers: each a small module, as DMOJ has them.

A built-in checker is a pure function `check(expected, actual, spec) -> CheckResult` over bytes.
The program checker (`program.py`) runs the problem's own checker in the sandbox instead.

Messages never quote the expected output: the people who read a submission's results are not
always allowed to see its tests. They say where the output went wrong and what the program printed
there (which its own stage output shows anyway).
"""

from __future__ import annotations

from collections.abc import Callable

from cutor_spool.runner.judge.checkers import exact, floats, lines, tokens
from cutor_spool.runner.judge.verdicts import CheckResult
from cutor_spool.submission import CheckerKind, CheckerSpec

BuiltinCheck = Callable[[bytes, bytes, CheckerSpec], CheckResult]

BUILTIN: dict[CheckerKind, BuiltinCheck] = {
    CheckerKind.EXACT: exact.check,
    CheckerKind.LINES: lines.check,
    CheckerKind.TOKENS: tokens.check,
    CheckerKind.FLOAT: floats.check,
}
