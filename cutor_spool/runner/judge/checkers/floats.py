"""`float`: tokens, where a number in the expected output accepts any number within an absolute
*or* a relative tolerance of it (`|a - e| <= abs_tol` or `|a - e| <= rel_tol * |e|`, as
`math.isclose`); other tokens must match exactly. A number is written in decimal, with an optional
exponent, or is inf/nan: Python's `float()` alone would also accept `1_000` and hexadecimal-ish
spellings that no judge does."""

from __future__ import annotations

import math
import re

from cutor_spool.runner.judge.checkers.show import excerpt
from cutor_spool.runner.judge.checkers.tokens import length_mismatch
from cutor_spool.runner.judge.verdicts import CheckResult
from cutor_spool.submission import CheckerSpec

NUMBER = re.compile(rb"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity|nan)", re.IGNORECASE)


def number(token: bytes) -> float | None:
    if NUMBER.fullmatch(token) is None:
        return None
    return float(token)


def close(expected: float, actual: float, abs_tol: float, rel_tol: float) -> bool:
    if math.isnan(expected) or math.isnan(actual):
        return math.isnan(expected) and math.isnan(actual)
    if expected == actual:  # infinities of the same sign, and exact hits
        return True
    if math.isinf(expected) or math.isinf(actual):  # else rel_tol * inf would accept anything
        return False
    diff = abs(actual - expected)
    return diff <= abs_tol or diff <= rel_tol * abs(expected)


def check(expected: bytes, actual: bytes, spec: CheckerSpec) -> CheckResult:
    want, got = expected.split(), actual.split()
    for index, (e, a) in enumerate(zip(want, got, strict=False), start=1):
        e_value = number(e)
        if e_value is None:
            if a != e:
                return CheckResult.wrong(f"token {index} differs: {excerpt(a)}")
            continue
        a_value = number(a)
        if a_value is None:
            return CheckResult.wrong(f"token {index}: a number was expected, got {excerpt(a)}")
        if not close(e_value, a_value, spec.abs_tol, spec.rel_tol):
            return CheckResult.wrong(
                f"token {index}: {excerpt(a)} is not within the tolerance "
                f"(absolute {spec.abs_tol:g}, relative {spec.rel_tol:g})"
            )
    return length_mismatch(len(want), len(got)) or CheckResult.accepted()
