"""The tests of a submission: their names, weights and limits, and their data, read when needed.

Inputs and expected outputs come inline from submission.yaml or from files of the spool entry
(intake has checked they exist and keeps them out of /work). They are read one test at a time, by
path, and closed at once: nothing holds the entry open, and 10,000 tests never sit in memory
together. A file that changed since intake is a failure of this attempt (retried with a fresh
intake), not a verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cutor_spool.errors import SpoolIOError
from cutor_spool.runner.intake import Plan
from cutor_spool.runner.judge.verdicts import Case
from cutor_spool.runner.tree import read_file


@dataclass(frozen=True)
class TestData:
    __test__ = False  # not a pytest class, whatever its name

    plan: Plan
    entry: Path

    def cases(self) -> list[Case]:
        sub = self.plan.submission
        tests = sub.tests or []
        names = sub.test_names()
        return [
            Case(index=i, name=names[i], points=test.points, limits=self.plan.test_limits[i])
            for i, test in enumerate(tests)
        ]

    def input(self, case: Case) -> bytes:
        test = (self.plan.submission.tests or [])[case.index]
        if test.input_file is not None:
            return self._read(test.input_file)
        return _encode(test.input)

    def generate(self, case: Case) -> list[str] | None:
        """The generator's arguments for a generated test (generated.py), else None."""
        return (self.plan.submission.tests or [])[case.index].generate

    def expected(self, case: Case) -> bytes | None:
        test = (self.plan.submission.tests or [])[case.index]
        if test.output_file is not None:
            return self._read(test.output_file)
        return None if test.output is None else _encode(test.output)

    def _read(self, name: str) -> bytes:
        try:
            return read_file(self.entry, name, self.plan.tree.files[name].size)
        except OSError as exc:
            raise SpoolIOError(f"test data {name} cannot be read: {exc}") from exc


def _encode(text: str | None) -> bytes:
    return b"" if text is None else text.encode("utf-8", "surrogatepass")
