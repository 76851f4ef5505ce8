"""Reporting: consumes grading's events and writes them into the submission's result.

The message flow is the seeds' (003), in `events.jsonl` and, as it happens, in `status.json`:

    claimed ("executing") -> compiling -> compiled {success} -> [checker_compiled {success}]
      -> testing {test} -> tested {test, verdict, score, ...}   (for each test; both held back: results.py)
      -> done {outcome, score, max_score, failed_subtasks} | error {reason}

`status.json` shows the test being judged (`test`), how far judging is (`tests_done`,
`tests_total`) and the verdicts so far (`verdicts`: counts); it and the event lines are written at
most every `live.TICK` (0.1 s) while tests go by, and at the end: a 10,000-test submission
rewrites its status.json (a small one: counts, not a growing list) ten times a second, not once
per test. Each test's `tests/<name>.json` is written by a thread while the next test runs
(`Reporter.stage(later=True)`). At the end: `tests` (name -> verdict), and when it is `done`:
`score`, `max_score`, `subtasks` (each one's score, points, rule and whether it passed) and, when
the problem has subtasks, `failed_subtasks` (seed 003: included unless compilation failed; a
compile error never reaches the judge).

Any `internal_error` (a checker that crashed, one that did not compile) ends the submission in
state `error` with the reason, after the remaining tests ran (seed 003: "did any errors occur?" is
asked at the end): the judge could not decide, so no score is given against the submission.
`result/junit.xml` is written before the final state, so whoever sees the end finds it.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from cutor_spool.documents.states import State
from cutor_spool.runner.intake import Plan
from cutor_spool.runner.judge.grading import CheckerCompiled, Event, TestJudged, TestStarted
from cutor_spool.runner.judge.junit import junit_xml
from cutor_spool.runner.judge.scoring import score
from cutor_spool.runner.judge.verdicts import CaseResult, Verdict
from cutor_spool.runner.results import Reporter
from cutor_spool.runner.stage import StageOutput

log = logging.getLogger(__name__)

EVENT_FEEDBACK = 300  # characters of feedback in an events.jsonl line (the full text is in tests/)


def _short(text: str, limit: int = EVENT_FEEDBACK) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _resources(output: StageOutput | None) -> dict[str, Any]:
    if output is None:
        return {}
    return {"cpu_time": round(output.cpu_time, 6), "wall_time": round(output.wall_time, 6), "memory": output.memory}


class JudgeReport:
    def __init__(self, reporter: Reporter, plan: Plan) -> None:
        self.reporter = reporter
        self.plan = plan
        self.results: dict[str, CaseResult] = {}
        self.counts: Counter[str] = Counter()
        self.total = len(plan.submission.tests or [])

    def consume(self, event: Event) -> None:
        if isinstance(event, CheckerCompiled):
            self.reporter.stage("checker_compile", event.output)
            self.reporter.event("checker_compiled", success=event.output.ok)
        elif isinstance(event, TestStarted):
            self.reporter.transition(
                State.TESTING,
                defer=True,
                test=event.case.name,
                tests_done=len(self.results),
                tests_total=self.total,
                verdicts=dict(self.counts),
            )
        else:
            self._judged(event)

    def _judged(self, event: TestJudged) -> None:
        result = event.result
        self.results[result.name] = result
        self.counts[str(result.verdict)] += 1
        fields: dict[str, Any] = {
            "test": result.name,
            "verdict": str(result.verdict),
            "score": round(result.score, 9),
            "points": result.case.points,
            "fraction": result.fraction,
            "feedback": result.feedback,
        }
        if result.generated is not None:
            fields["generated"] = result.generated
        if result.output is not None:
            extra = dict(fields)
            if result.checker is not None:
                extra["checker"] = result.checker.document()
            extra.update(result.details or {})
            self.reporter.stage(f"tests/{result.name}", result.output, later=True, **extra)
        feedback = _short(result.feedback)
        self.reporter.event("tested", defer=True, **{**fields, "feedback": feedback}, **_resources(result.output))

    def finish(self) -> None:
        reporter, sub = self.reporter, self.plan.submission
        entry_id = reporter.claim.entry_id
        ordered = [self.results[name] for name in sub.test_names()]
        common: dict[str, Any] = {
            "tests": {r.name: str(r.verdict) for r in ordered},
            "tests_done": len(ordered),
            "tests_total": self.total,
            "verdicts": dict(self.counts),
        }
        failed = [r for r in ordered if r.verdict == Verdict.INTERNAL_ERROR]
        if failed:
            reason = f"test {failed[0].name}: {failed[0].feedback}"
            if len(failed) > 1:
                reason += f" (and {len(failed) - 1} more test(s) the judge could not decide)"
            reporter.write_bytes("junit.xml", junit_xml(entry_id, sub, ordered, None))
            log.error("%s: judging failed: %s", entry_id, reason)
            reporter.finish(State.ERROR, reason=reason, **common)
            return
        total = score(sub, self.results)
        accepted = self.counts[str(Verdict.ACCEPTED)]
        message = f"score {total.score:g}/{total.max_score:g}: {accepted} of {len(ordered)} tests accepted"
        fields: dict[str, Any] = {
            **common,
            "score": total.score,
            "max_score": total.max_score,
            "subtasks": {s.name: s.to_json() for s in total.subtasks},
        }
        if sub.subtasks:
            fields["failed_subtasks"] = total.failed_subtasks
            if total.failed_subtasks:
                message += "; failed subtasks: " + ", ".join(total.failed_subtasks)
        else:
            del fields["subtasks"]
        reporter.write_bytes("junit.xml", junit_xml(entry_id, sub, ordered, total))
        log.info("%s: judged: %s, %s", entry_id, total.outcome, message)
        reporter.finish(State.DONE, total.outcome, message=message, **fields)
