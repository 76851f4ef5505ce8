"""From per-test fractions to a submission's score: subtasks, scoring rules, outcome. Pure.

- Without subtasks, `sum` gives each test its `points` times its fraction; `group_min` treats all
  tests as one group (all or nothing, CMS's GroupMin): the total points times the worst fraction.
- A subtask is worth its `points`. Under `sum` (CMS's GroupSum) it earns them in proportion to its
  tests' fractions, each test weighted by its `points` (equal weights by default); under
  `group_min` it earns its points times its worst test's fraction.
- A test that is in no subtask scores on its own, its `points` times its fraction, as DMOJ scores
  cases outside batches; nothing is silently dropped (give samples `points: 0`). A test may be in
  several subtasks; it runs once and counts in each.
- A subtask *fails* when any of its tests is not accepted, whatever it scored, or when one of its
  prerequisites (`depends_on`, transitively) failed: then it also scores 0 (`skipped_for` names
  the failed prerequisite).
- A test a checker passed with a fraction of 0 is `accepted` and scores 0 (DMOJ's semantics).
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
    skipped_for: str | None = None  # the failed prerequisite that made it score 0

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "score": self.score, "points": self.points, "scoring": str(self.scoring), "passed": self.passed,
        }  # fmt: skip
        if self.skipped_for is not None:
            data["skipped_for"] = self.skipped_for
        return data


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


def _failed_prerequisites(sub: Submission, own_pass: Mapping[str, bool]) -> dict[str, str]:
    """Subtask -> a failed prerequisite of it (direct or not; a prerequisite fails by its own tests
    or by its own prerequisites). `depends_on` has no cycles (checked at intake): taken in
    topological order, without recursion (10,000 subtasks may chain)."""
    subtasks = sub.subtasks or []
    waiting = {s.name: len(set(s.depends_on)) for s in subtasks}
    dependents: dict[str, list[str]] = {}
    for s in subtasks:
        for dep in set(s.depends_on):
            dependents.setdefault(dep, []).append(s.name)
    known = {s.name: s for s in subtasks}
    ready = [name for name, count in waiting.items() if count == 0]
    blocked: dict[str, str] = {}
    while ready:
        name = ready.pop()
        for dep in known[name].depends_on:
            if not own_pass[dep] or dep in blocked:
                blocked[name] = dep
                break
        for later in dependents.get(name, []):
            waiting[later] -= 1
            if waiting[later] == 0:
                ready.append(later)
    return blocked


def _subtask_scores(sub: Submission, results: Mapping[str, CaseResult]) -> list[SubtaskScore]:
    own_pass = {s.name: all(results[t].passed for t in s.tests) for s in sub.subtasks or []}
    blocked = _failed_prerequisites(sub, own_pass)
    scores = []
    for subtask in sub.subtasks or []:
        members = [results[name] for name in subtask.tests]
        rule = subtask.scoring or sub.scoring
        earned = 0.0 if subtask.name in blocked else _group(members, subtask.points, rule)
        scores.append(
            SubtaskScore(
                name=subtask.name,
                score=round(earned, DIGITS),
                points=subtask.points,
                scoring=rule,
                passed=own_pass[subtask.name] and subtask.name not in blocked,
                tests=tuple(subtask.tests),
                skipped_for=blocked.get(subtask.name),
            )
        )
    return scores


def _outcome(every_accepted: bool, total: float) -> Outcome:
    if every_accepted:
        return Outcome.ACCEPTED
    return Outcome.REJECTED if total <= 0 else Outcome.PARTIAL


def score(sub: Submission, results: Mapping[str, CaseResult]) -> Score:
    """`results` holds every test by name (skipped and failed ones with fraction 0)."""
    ordered = [results[name] for name in sub.test_names()]
    subtasks = _subtask_scores(sub, results)
    in_subtask = {t for s in sub.subtasks or [] for t in s.tests}
    loose = [r for r in ordered if r.name not in in_subtask]
    loose_points = math.fsum(r.case.points for r in loose)
    if not sub.subtasks and sub.scoring == Scoring.GROUP_MIN:
        loose_score = _group(loose, loose_points, Scoring.GROUP_MIN)
    else:
        loose_score = math.fsum(r.score for r in loose)
    total = round(math.fsum(s.score for s in subtasks) + loose_score, DIGITS)
    maximum = round(math.fsum(s.points for s in subtasks) + loose_points, DIGITS)
    outcome = _outcome(all(r.passed for r in ordered), total)
    return Score(total, maximum, outcome, tuple(subtasks), tuple(r.name for r in loose))
