"""`exact`: every byte counts, trailing newline included."""

from __future__ import annotations

from cutor_spool.runner.judge.checkers.show import excerpt, first_difference
from cutor_spool.runner.judge.verdicts import CheckResult
from cutor_spool.submission import CheckerSpec


def check(expected: bytes, actual: bytes, spec: CheckerSpec) -> CheckResult:
    if actual == expected:
        return CheckResult.accepted()
    at = first_difference(expected, actual)
    line = actual.count(b"\n", 0, at) + 1
    column = at - (actual.rfind(b"\n", 0, at) + 1) + 1
    if at == len(actual):
        return CheckResult.wrong(f"the output ends early, at line {line}, column {column}")
    if at == len(expected):
        return CheckResult.wrong(f"extra output from line {line}, column {column}: {excerpt(actual[at:])}")
    return CheckResult.wrong(f"differs at line {line}, column {column}: {excerpt(actual[at:])}")
