"""From per-test fractions to a submission's score: subtasks, scoring rules, outcome. Pure.

- Without subtasks, `sum` gives each test its `points` times its fraction; `group_min` treats all
  tests as one group (all or nothing, CMS's GroupMin): the total points times the worst fraction.
- A subtask is worth its `points`. Under `sum` (CMS's GroupSum) it earns them in proportion to its
  tests' fractions, each test weighted by its `points` (equal weights by default); under
  `group_min` it earns its points times its worst test's fraction.
- A test that is in no subtask scores on its own, its `points` times its fraction, as DMOJ scores
  cases outside batches; nothing is silently dropped (give samples `points: 0`). A test may be in
  several subtasks; it runs once and counts in each.
- A subtask *fails* when any of its tests is not accepted, whatever it scored.
- The outcome is `accepted` when every test is accepted, `rejected` when the score is 0, and
  `partial` in between.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cutor_spool.documents.states import Outcome
from cutor_spool.runner.judge.verdicts import CaseResult
from cutor_spool.submission import Scoring, Submission

DIGITS = 9  # scores are rounded so that 0.1 + 0.2 reads 0.3


@dataclass(frozen=True)
class SubtaskScore:
    name: str
    score: float
    points: float
    scoring: Scoring
    passed: bool
    tests: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {"score": self.score, "points": self.points, "scoring": str(self.scoring), "passed": self.passed}


@dataclass(frozen=True)
class Score:
    score: float
    max_score: float
    outcome: Outcome
    subtasks: tuple[SubtaskScore, ...]  # empty when the problem has none
    loose: tuple[str, ...]  # tests that belong to no subtask (all of them when there are none)

    @property
    def failed_subtasks(self) -> list[str]:
        return [s.name for s in self.subtasks if not s.passed]


def _group(results: Sequence[CaseResult], points: float, scoring: Scoring) -> float:
    if not results:
        return 0.0
    if scoring == Scoring.GROUP_MIN:
        return points * min(r.fraction for r in results)
    weights = [r.case.points for r in results]
    total = math.fsum(weights)
    if total <= 0:  # every test weighs 0: weigh them equally rather than divide by zero
        return points * math.fsum(r.fraction for r in results) / len(results)
    return points * math.fsum(w * r.fraction for w, r in zip(weights, results, strict=True)) / total


def score(sub: Submission, results: Mapping[str, CaseResult]) -> Score:
    """`results` holds every test by name (skipped and failed ones with fraction 0)."""
    ordered = [results[name] for name in sub.test_names()]
    every_accepted = all(r.passed for r in ordered)
    subtasks: list[SubtaskScore] = []
    in_subtask: set[str] = set()
    for subtask in sub.subtasks or []:
        members = [results[name] for name in subtask.tests]
        rule = subtask.scoring or sub.scoring
        subtasks.append(
            SubtaskScore(
                name=subtask.name,
                score=round(_group(members, subtask.points, rule), DIGITS),
                points=subtask.points,
                scoring=rule,
                passed=all(r.passed for r in members),
                tests=tuple(subtask.tests),
            )
        )
        in_subtask.update(subtask.tests)
    loose = [r for r in ordered if r.name not in in_subtask]
    loose_points = math.fsum(r.case.points for r in loose)
    if not sub.subtasks and sub.scoring == Scoring.GROUP_MIN:
        loose_score = _group(loose, loose_points, Scoring.GROUP_MIN)
    else:
        loose_score = math.fsum(r.score for r in loose)
    total = round(math.fsum(s.score for s in subtasks) + loose_score, DIGITS)
    maximum = round(math.fsum(s.points for s in subtasks) + loose_points, DIGITS)
    if every_accepted:
        outcome = Outcome.ACCEPTED
    elif total <= 0:
        outcome = Outcome.REJECTED
    else:
        outcome = Outcome.PARTIAL
    return Score(total, maximum, outcome, tuple(subtasks), tuple(r.name for r in loose))
