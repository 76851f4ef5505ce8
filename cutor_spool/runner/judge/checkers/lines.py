"""`lines` (the default): line by line, ignoring whitespace at the end of each line and blank lines
at the end of the output (as CMS's white-diff, and what `output: "3"` in YAML needs to accept
"3\\n"). Leading whitespace and blank lines inside the output still count; "\\r\\n" equals "\\n"."""

from __future__ import annotations

from cutor_spool.runner.judge.checkers.show import excerpt, plural
from cutor_spool.runner.judge.verdicts import CheckResult
from cutor_spool.submission import CheckerSpec

TRAILING = b" \t\r\x0b\x0c"


def normalise(data: bytes) -> list[bytes]:
    rows = [row.rstrip(TRAILING) for row in data.split(b"\n")]
    while rows and not rows[-1]:
        rows.pop()
    return rows


def check(expected: bytes, actual: bytes, spec: CheckerSpec) -> CheckResult:
    if actual == expected:  # the common case, without splitting anything
        return CheckResult.accepted()
    want, got = normalise(expected), normalise(actual)
    for number, (a, b) in enumerate(zip(want, got, strict=False), start=1):
        if a != b:
            return CheckResult.wrong(f"line {number} differs: {excerpt(b)}")
    if len(got) < len(want):
        return CheckResult.wrong(f"the output ends early: {plural(len(got), 'line')}, {len(want)} expected")
    if len(got) > len(want):
        return CheckResult.wrong(f"extra output from line {len(want) + 1}: {excerpt(got[len(want)])}")
    return CheckResult.accepted()
