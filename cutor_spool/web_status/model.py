"""What the page shows about one submission, from the documents its worker wrote.

Two views, both pure functions of documents already read and parsed (see `reading.py`):

- `summarize`: one small record per submission, kept in the incremental index (`index.py`) so that
  the front page, the history pages, status.json and metrics.prom never re-read the spool's done
  entries. Every record has the same keys (`SUMMARY_KEYS`), whatever the source file looked like.
- `Detail`: everything a submission's own page shows: stages with their output, the tests table of
  a judged submission, the event log.

The files come from workers of possibly other versions, or from a hand-made mess: they are parsed
with the documents' models (`documents/`), which ignore fields they do not know; a file that does
not fit its model is shown as missing, never trusted. Text is clipped to what a page can show.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cutor_spool.documents.stage import AppliedLimits, StageDocument, Verdict
from cutor_spool.documents.states import Outcome
from cutor_spool.documents.status import StageSummary, StatusDocument
from cutor_spool.web_status.charts import between, unix
from cutor_spool.web_status.reading import Stage, TooLarge

# Stages in the order they run; any other stage file (a checker's compile, say) follows by name.
STAGE_ORDER = ("dependencies", "compile", "run")
GOOD_OUTCOMES = frozenset({Outcome.OK.value, Outcome.ACCEPTED.value})
MESSAGE_LIMIT = 300
DISPLAY_LIMIT = 64 * 1024  # characters of one stream shown on a page; the spool keeps all of it
TEST_DISPLAY_LIMIT = 4 * 1024

SUMMARY_KEYS = (
    "name",
    "id",
    "state",
    "outcome",
    "score",
    "max_score",
    "tests",
    "attempts",
    "worker",
    "host",
    "queued",
    "claimed",
    "queue_wait",  # seconds from queued to (the last) claimed
    "finished",
    "finished_unix",  # the same as Unix time, and the seconds from queued to finished (the charts)
    "latency",
    "cpu_time",
    "wall_time",
    "memory",
    "message",
)

# One cached environment as the page shows it (live.build_summary).
BUILD_KEYS = (
    "name",
    "status",
    "packages",
    "size",
    "built_at",
    "last_used",
    "uses",
    "build_time",
    "nixpkgs",
    "system",
    "message",
    "package_list",  # [name, version, store path, size] of each package
)


def clip(value: object, limit: int = MESSAGE_LIMIT) -> str | None:
    """A value as the page shows it: text, cut to `limit` characters; None stays None."""
    if value is None:
        return None
    out = str(value)
    return out if len(out) <= limit else out[: limit - 1] + "…"


def natural_key(name: str) -> tuple[Any, ...]:
    """`test2` before `test10`, as people number tests."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def _first_message(status: StatusDocument) -> str | None:
    for found in (status.reason, status.message):
        if found:
            return clip(found)
    if status.errors:
        first = status.errors[0]
        where, message = clip(first.where, 80), clip(first.message)
        more = f" (+{len(status.errors) - 1} more)" if len(status.errors) > 1 else ""
        if message:
            return clip(f"{where}: {message}{more}" if where else f"{message}{more}")
    return None


@dataclass(frozen=True)
class TestRow:
    name: str
    verdict: str | None
    score: float | None
    points: float | None
    cpu_time: float | None
    wall_time: float | None
    memory: int | None
    message: str | None
    stdout: str = ""
    stdout_cut: int = 0  # characters not shown


def _test_row(name: str, doc: StageDocument | TooLarge | None, listed: Verdict | None) -> TestRow:
    if not isinstance(doc, StageDocument):
        message = "result file too large to show" if isinstance(doc, TooLarge) else None
        verdict = clip(listed, 40)
        return TestRow(name, verdict, None, None, None, None, None, message)
    checker = doc.checker.message if doc.checker is not None else None
    shown = doc.stdout[:TEST_DISPLAY_LIMIT]
    return TestRow(
        name=name,
        verdict=clip(doc.verdict or listed, 40),
        score=doc.score,
        points=doc.points,
        cpu_time=doc.cpu_time,
        wall_time=doc.wall_time,
        memory=doc.memory,
        message=clip(doc.feedback or checker or doc.message, 1000),
        stdout=shown,
        stdout_cut=len(doc.stdout) - len(shown),
    )


def test_rows(status: StatusDocument | None, docs: dict[str, StageDocument | TooLarge | None]) -> list[TestRow]:
    """The tests table: from `result/tests/<name>.json` (the judge's stage output plus verdict),
    completed by the verdicts `status.json`'s `tests` lists."""
    listed = (status.tests if status is not None else None) or {}
    names = list(listed) + sorted((n for n in docs if n not in listed), key=natural_key)
    return [_test_row(name, docs.get(name), listed.get(name)) for name in names]


def _most(values: Iterable[float | None]) -> Any:
    return max((v for v in values if v is not None), default=None)


def _resources(stages: dict[str, StageSummary], rows: list[TestRow]) -> tuple[Any, Any, Any]:
    """Time and memory as judges show them: the run's, or the worst test's; without either (a
    compile error, say) the worst of the stages that did run."""
    run = stages.get("run")
    basis = list(stages.values()) if run is None and not rows else [run] if run is not None else []
    return (
        _most([*(s.cpu_time for s in basis), *(r.cpu_time for r in rows)]),
        _most([*(s.wall_time for s in basis), *(r.wall_time for r in rows)]),
        _most([*(s.memory for s in basis), *(r.memory for r in rows)]),
    )


def summarize(name: str, status: StatusDocument | None, tests: list[TestRow] | None = None) -> dict[str, Any]:
    """The index record of one submission (`name` is its directory name in done/ or active/)."""
    if status is None:
        return {**dict.fromkeys(SUMMARY_KEYS), "name": name, "id": name, "state": "unknown"}
    rows = tests or []
    cpu_time, wall_time, memory = _resources(status.stages, rows)
    passed = sum(1 for r in rows if r.verdict in ("accepted", "ok"))
    return {
        "name": name,
        "id": clip(status.id, 200) or name,
        "state": status.state.value,
        "outcome": status.outcome.value if status.outcome else None,
        "score": status.score,
        "max_score": status.max_score,
        "tests": f"{passed}/{len(rows)}" if rows else None,
        "attempts": status.attempts,
        "worker": clip(status.worker, 200),
        "host": clip(status.host, 200),
        "queued": clip(status.states.get("queued"), 40),
        "claimed": clip(status.states.get("claimed"), 40),
        "queue_wait": between(status.states.get("queued"), status.states.get("claimed")),
        "finished": clip(status.finished_at, 40),
        "finished_unix": unix(status.finished_at),
        "latency": between(status.states.get("queued"), status.finished_at),
        "cpu_time": cpu_time,
        "wall_time": wall_time,
        "memory": memory,
        "message": _first_message(status),
    }


@dataclass(frozen=True)
class Stream:
    key: str  # stdout, stderr, output
    label: str
    text: str
    cut: int = 0  # characters not shown
    truncated_by_limit: bool = False  # the runner stopped reading it (output limit)


@dataclass(frozen=True)
class StageView:
    name: str
    status: str | None
    exit_code: int | None
    signal: str | None
    cpu_time: float | None
    wall_time: float | None
    memory: int | None
    message: str | None
    limits: dict[str, Any]
    streams: list[Stream]
    facts: list[tuple[str, str]]  # other scalar fields (a dependencies record, say)
    too_large: int | None = None


def _stream(key: str, label: str, value: str | None, truncated: bool) -> Stream | None:
    if not value:
        return None
    shown = value[:DISPLAY_LIMIT]
    return Stream(key, label, shown, len(value) - len(shown), truncated)


def _streams(doc: Stage) -> list[Stream]:
    cut = doc.truncated
    streams = [
        _stream("stdout", "stdout", doc.stdout, bool(cut and cut.stdout)),
        _stream("stderr", "stderr", doc.stderr, bool(cut and cut.stderr)),
    ]
    present = [s for s in streams if s is not None]
    if len(present) == 2:  # both: the interleaved record shows how they went together
        streams.append(_stream("output", "stdout and stderr, interleaved", doc.output, False))
    elif not present:
        streams.append(_stream("output", "output", doc.output, False))
    return [s for s in streams if s is not None]


_STAGE_FIELDS = frozenset(
    {"stage", "status", "exit_code", "signal", "cpu_time", "wall_time", "memory", "limits", "truncated", "message"}
    | {"stdout", "stderr", "output", "stdout_base64", "stderr_base64", "output_base64"}
)


def stage_view(name: str, doc: Stage | TooLarge | None, summary: StageSummary | None) -> StageView:
    if doc is None or isinstance(doc, TooLarge):
        return StageView(
            name=name,
            status=clip(summary.status if summary else None, 40),
            exit_code=summary.exit_code if summary else None,
            signal=None,
            cpu_time=summary.cpu_time if summary else None,
            wall_time=summary.wall_time if summary else None,
            memory=summary.memory if summary else None,
            message=None,
            limits={},
            streams=[],
            facts=[],
            too_large=doc.size if isinstance(doc, TooLarge) else None,
        )
    limits = doc.limits.model_dump() if isinstance(doc.limits, AppliedLimits) else dict(doc.limits or {})
    facts = [
        (key, clip(value) or "")
        for key, value in doc.dump().items()
        if key not in _STAGE_FIELDS and not isinstance(value, dict | list) and value is not None
    ]
    return StageView(
        name=name,
        status=clip(doc.status, 40),
        exit_code=doc.exit_code,
        signal=clip(doc.signal, 20),
        cpu_time=doc.cpu_time,
        wall_time=doc.wall_time,
        memory=doc.memory,
        message=clip(doc.message, 4000),
        limits=limits,
        streams=_streams(doc),
        facts=facts,
    )


def stage_names(found: list[str], status: StatusDocument | None) -> list[str]:
    known = set(found) | set(status.stages if status is not None else {})
    return [s for s in STAGE_ORDER if s in known] + sorted(known - set(STAGE_ORDER))


@dataclass(frozen=True)
class SubtaskRow:
    name: str
    score: float | None
    points: float | None
    scoring: str | None
    passed: bool | None
    skipped_for: str | None = None  # the failed prerequisite that made it score 0


def subtask_rows(status: StatusDocument) -> list[SubtaskRow]:
    subtasks = status.subtasks or {}
    return [
        SubtaskRow(name, s.score, s.points, clip(s.scoring, 40), s.passed, clip(s.skipped_for, 100) or None)
        for name, s in subtasks.items()
    ]


@dataclass(frozen=True)
class Progress:
    """How far judging is, on a running submission's page."""

    done: int
    total: int
    test: str | None


@dataclass(frozen=True)
class Detail:
    """One submission's page."""

    summary: dict[str, Any]
    live: bool  # active: the page refreshes itself
    stages: list[StageView]
    tests: list[TestRow]
    events: list[dict[str, Any]]
    states: list[tuple[str, str]] = field(default_factory=list)
    subtasks: list[SubtaskRow] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    extra: list[tuple[str, str]] = field(default_factory=list)
    progress: Progress | None = None
    failed_subtasks: list[str] = field(default_factory=list)
    reason: str | None = None
    message: str | None = None


_SHOWN_ELSEWHERE = frozenset(
    {"id", "state", "outcome", "states", "stages", "tests", "errors", "updated_at", "score", "max_score"}
    | {"attempts", "worker", "host", "reason", "message", "subtasks", "failed_subtasks", "tests_done", "tests_total"}
)


def _extra(status: StatusDocument) -> list[tuple[str, str]]:
    """The status's other fields (the backend, the sandbox's uid, a duplicate's original, ...)."""
    return [
        (key, (clip(value, 4000) if not isinstance(value, dict | list) else _compact(value)) or "")
        for key, value in status.dump().items()
        if key not in _SHOWN_ELSEWHERE and value is not None
    ]


def _progress(status: StatusDocument) -> Progress | None:
    if status.tests_total is None:
        return None
    return Progress(status.tests_done or 0, status.tests_total, status.test)


def detail(
    name: str,
    status: StatusDocument | None,
    stages: dict[str, Stage | TooLarge | None],
    tests: dict[str, StageDocument | TooLarge | None],
    events: list[dict[str, Any]],
    *,
    live: bool,
) -> Detail:
    rows = test_rows(status, tests)
    summary = summarize(name, status, rows)
    if summary["message"] is None:
        # The final transition's message (a compiler's last lines, say) is kept in events.jsonl.
        final = [e for e in events if e.get("event") == summary["state"] and clip(e.get("message"))]
        summary["message"] = clip(final[-1]["message"]) if final else None
    summaries = status.stages if status is not None else {}
    return Detail(
        summary=summary,
        live=live,
        stages=[stage_view(s, stages.get(s), summaries.get(s)) for s in stage_names(list(stages), status)],
        tests=rows,
        events=events,
        **(_from_status(status) if status is not None else {}),
    )


def _from_status(status: StatusDocument) -> dict[str, Any]:
    """The parts of a page that only status.json tells."""
    return {
        "states": [(k, clip(v, 40) or "") for k, v in status.states.items()],
        "subtasks": subtask_rows(status),
        "errors": [(clip(e.where, 200) or "", clip(e.message, 4000) or "") for e in status.errors or []],
        "extra": _extra(status),
        "progress": _progress(status),
        "failed_subtasks": status.failed_subtasks or [],
        "reason": status.reason,
        "message": status.message,
    }


def _compact(value: Any) -> str:
    out = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    return out if len(out) <= 4000 else out[:3999] + "…"
