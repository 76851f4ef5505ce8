"""`tokens`: the output as a sequence of whitespace-separated tokens; how they are spaced or split
into lines does not matter (DMOJ's `standard`)."""

from __future__ import annotations

from cutor_spool.runner.judge.checkers.show import excerpt, plural
from cutor_spool.runner.judge.verdicts import CheckResult
from cutor_spool.submission import CheckerSpec


def check(expected: bytes, actual: bytes, spec: CheckerSpec) -> CheckResult:
    want, got = expected.split(), actual.split()
    for number, (a, b) in enumerate(zip(want, got, strict=False), start=1):
        if a != b:
            return CheckResult.wrong(f"token {number} differs: {excerpt(b)}")
    return length_mismatch(len(want), len(got)) or CheckResult.accepted()


def length_mismatch(want: int, got: int) -> CheckResult | None:
    if got < want:
        return CheckResult.wrong(f"the output ends early: {plural(got, 'token')}, {want} expected")
    if got > want:
        return CheckResult.wrong(f"extra output: {plural(got, 'token')}, {want} expected")
    return None
