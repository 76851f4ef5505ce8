"""Which tests still need to run, as judges run batches. Pure: `grading.py` asks before each test.

- A `group_min` subtask (all or nothing, DMOJ's batch, Codeforces' "complete group") scores 0 once
  one of its tests fails with nothing: the rest of its tests are `skipped`, no stage run, unless it
  says `run_all: true` (to see every verdict). A `sum` subtask earns something from every test,
  so all of its tests run: skipping never changes a score.
- A subtask whose prerequisite (`depends_on`, transitively) failed scores 0 (`scoring.py`): its
  tests are skipped once that failure is known, that is, for the tests after the prerequisite's
  failed test in the order of `tests` (problems list their tests subtask by subtask, in order).
- A test runs if any subtask it belongs to still needs it, or if it belongs to none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cutor_spool.runner.judge.verdicts import CaseResult, Verdict
from cutor_spool.submission import Scoring, Submission


@dataclass
class BatchPlan:
    sub: Submission
    member_of: dict[str, list[str]] = field(default_factory=dict)  # test -> its subtasks, in order
    settled: dict[str, str] = field(default_factory=dict)  # group_min subtask -> the test that zeroed it
    failed: dict[str, str] = field(default_factory=dict)  # subtask -> a test of it not accepted

    def __post_init__(self) -> None:
        for subtask in self.sub.subtasks or []:
            for test in subtask.tests:
                self.member_of.setdefault(test, []).append(subtask.name)
        self._subtasks = {s.name: s for s in self.sub.subtasks or []}

    def blocked_by(self, name: str) -> str | None:
        """The failed prerequisite (direct or not) of subtask `name`, if one is known to have failed."""
        seen: set[str] = set()
        pending = list(self._subtasks[name].depends_on)
        while pending:
            dep = pending.pop()
            if dep in seen:
                continue
            seen.add(dep)
            if dep in self.failed:
                return dep
            pending.extend(self._subtasks[dep].depends_on)
        return None

    def _why_not(self, subtask: str) -> str | None:
        """Why `subtask` needs no more of its tests, or None if it does."""
        blocker = self.blocked_by(subtask)
        if blocker is not None:
            return f"subtask {subtask}'s prerequisite {blocker} failed (test {self.failed[blocker]})"
        if subtask in self.settled and not self._subtasks[subtask].run_all:
            return f"subtask {subtask} already scores 0 (test {self.settled[subtask]} failed)"
        return None

    def skip(self, test: str) -> str | None:
        """Why test `test` need not run (the feedback of its `skipped` verdict), or None to run it."""
        subtasks = self.member_of.get(test)
        if not subtasks:
            return None
        reasons = []
        for subtask in subtasks:
            reason = self._why_not(subtask)
            if reason is None:
                return None
            reasons.append(reason)
        return "not run: " + "; ".join(reasons)

    def record(self, result: CaseResult) -> None:
        """What a test that ran says about its subtasks. A skipped test says nothing new: its subtasks
        had already failed, or their prerequisites had (which names the failure that counts), or
        `short_circuit` skips everything after it anyway."""
        if result.passed or result.verdict == Verdict.SKIPPED:
            return
        for subtask in self.member_of.get(result.name, []):
            self.failed.setdefault(subtask, result.name)
            rule = self._subtasks[subtask].scoring or self.sub.scoring
            if rule == Scoring.GROUP_MIN and result.fraction <= 0:
                self.settled.setdefault(subtask, result.name)
