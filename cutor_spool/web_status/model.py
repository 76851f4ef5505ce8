"""What the page shows about one submission, from the files its worker wrote.

Two views, both pure functions of JSON already read (see `reading.py`):

- `summarize`: one small record per submission, kept in the incremental index (`index.py`) so that
  the front page, the history pages, status.json and metrics.prom never re-read the spool's done
  entries. Every record has the same keys (`SUMMARY_KEYS`), whatever the source file looked like.
- `Detail`: everything a submission's own page shows: stages with their output, the tests table of
  a judged submission, the event log.

The files come from workers of possibly other versions, from the judge and the builder being
written in parallel, or from a hand-made mess: every field is read defensively, and a value of the
wrong type is shown as missing, never trusted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from cutor_spool.web_status.reading import TooLarge

# Stages in the order they run; any other stage file (a checker's compile, say) follows by name.
STAGE_ORDER = ("dependencies", "compile", "run")
TERMINAL_STATES = ("done", "invalid", "error")
GOOD_OUTCOMES = frozenset({"ok", "accepted"})
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
    "finished",
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


def text(value: Any, limit: int = MESSAGE_LIMIT) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    out = str(value)
    return out if len(out) <= limit else out[: limit - 1] + "…"


def number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def integer(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def natural_key(name: str) -> tuple[Any, ...]:
    """`test2` before `test10`, as people number tests."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def finished_at(status: dict[str, Any]) -> str | None:
    states = mapping(status.get("states"))
    state = status.get("state")
    if isinstance(state, str) and state in TERMINAL_STATES and isinstance(states.get(state), str):
        return str(states[state])
    return text(status.get("updated_at"), 40)


def _first_message(status: dict[str, Any]) -> str | None:
    for key in ("reason", "message"):
        found = text(status.get(key))
        if found:
            return found
    errors = status.get("errors")
    if isinstance(errors, list) and errors:
        first = mapping(errors[0])
        where, message = text(first.get("where"), 80), text(first.get("message"))
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        if message:
            return text(f"{where}: {message}{more}" if where else f"{message}{more}")
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


def test_rows(status: dict[str, Any], docs: dict[str, dict[str, Any] | TooLarge | None]) -> list[TestRow]:
    """The tests table: from `result/tests/<name>.json` (the judge's stage output plus verdict),
    completed by whatever `status.json`'s `tests` says (a verdict per name, or a record)."""
    listed = status.get("tests")
    names = list(listed) if isinstance(listed, dict) else []
    names += sorted((n for n in docs if n not in names), key=natural_key)
    rows = []
    for name in names:
        doc = docs.get(name)
        data = doc if isinstance(doc, dict) else {}
        extra = listed.get(name) if isinstance(listed, dict) else None
        record = extra if isinstance(extra, dict) else {}
        checker = mapping(data.get("checker"))
        verdict = text(data.get("verdict") or record.get("verdict") or (extra if isinstance(extra, str) else None), 40)
        message = text(
            data.get("feedback")
            or data.get("checker_message")
            or checker.get("message")
            or record.get("feedback")
            or record.get("message")
            or data.get("message"),
            1000,
        )
        stdout = text(data.get("stdout"), 10**9) or ""
        shown = stdout[:TEST_DISPLAY_LIMIT]
        rows.append(
            TestRow(
                name=name,
                verdict=verdict,
                score=number(data.get("score", record.get("score"))),
                points=number(data.get("points", record.get("points"))),
                cpu_time=number(data.get("cpu_time", record.get("cpu_time"))),
                wall_time=number(data.get("wall_time", record.get("wall_time"))),
                memory=integer(data.get("memory", record.get("memory"))),
                message=message if not isinstance(doc, TooLarge) else "result file too large to show",
                stdout=shown,
                stdout_cut=len(stdout) - len(shown),
            )
        )
    return rows


def summarize(name: str, status: dict[str, Any] | None, tests: list[TestRow] | None = None) -> dict[str, Any]:
    """The index record of one submission (`name` is its directory name in done/ or active/)."""
    if status is None:
        return {**dict.fromkeys(SUMMARY_KEYS), "name": name, "id": name, "state": "unknown"}
    # Time and memory as judges show them: the run's, or the worst test's; without either (a
    # compile error, say) the worst of the stages that did run.
    stage_map = mapping(status.get("stages"))
    rows = tests or []
    if "run" in stage_map or rows:
        basis = [mapping(stage_map.get("run"))] if "run" in stage_map else []
    else:
        basis = [mapping(s) for s in stage_map.values()]
    cpu = [number(s.get("cpu_time")) for s in basis] + [r.cpu_time for r in rows]
    wall = [number(s.get("wall_time")) for s in basis] + [r.wall_time for r in rows]
    memory = [integer(s.get("memory")) for s in basis] + [r.memory for r in rows]
    passed = sum(1 for r in rows if r.verdict in ("accepted", "ok"))
    states = mapping(status.get("states"))
    return {
        "name": name,
        "id": text(status.get("id"), 200) or name,
        "state": text(status.get("state"), 40) or "unknown",
        "outcome": text(status.get("outcome"), 40),
        "score": number(status.get("score")),
        "max_score": number(status.get("max_score")),
        "tests": f"{passed}/{len(rows)}" if rows else None,
        "attempts": integer(status.get("attempts")),
        "worker": text(status.get("worker"), 200),
        "host": text(status.get("host"), 200),
        "queued": text(states.get("queued"), 40),
        "finished": finished_at(status),
        "cpu_time": max((c for c in cpu if c is not None), default=None),
        "wall_time": max((w for w in wall if w is not None), default=None),
        "memory": max((m for m in memory if m is not None), default=None),
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


def _stream(key: str, label: str, value: Any, truncated: bool) -> Stream | None:
    if not isinstance(value, str) or not value:
        return None
    shown = value[:DISPLAY_LIMIT]
    return Stream(key, label, shown, len(value) - len(shown), truncated)


_STAGE_FIELDS = frozenset(
    {"stage", "status", "exit_code", "signal", "cpu_time", "wall_time", "memory", "limits", "truncated", "message"}
    | {"stdout", "stderr", "output", "stdout_base64", "stderr_base64", "output_base64"}
)


def stage_view(name: str, doc: dict[str, Any] | TooLarge | None, summary: dict[str, Any]) -> StageView:
    if isinstance(doc, TooLarge) or doc is None:
        return StageView(
            name=name,
            status=text(summary.get("status"), 40),
            exit_code=integer(summary.get("exit_code")),
            signal=None,
            cpu_time=number(summary.get("cpu_time")),
            wall_time=number(summary.get("wall_time")),
            memory=integer(summary.get("memory")),
            message=None,
            limits={},
            streams=[],
            facts=[],
            too_large=doc.size if isinstance(doc, TooLarge) else None,
        )
    cut = mapping(doc.get("truncated"))
    streams = [
        _stream("stdout", "stdout", doc.get("stdout"), bool(cut.get("stdout"))),
        _stream("stderr", "stderr", doc.get("stderr"), bool(cut.get("stderr"))),
    ]
    present = [s for s in streams if s is not None]
    if len(present) == 2:  # both: the interleaved record shows how they went together
        streams.append(_stream("output", "stdout and stderr, interleaved", doc.get("output"), False))
    elif not present:
        streams.append(_stream("output", "output", doc.get("output"), False))
    facts = [
        (key, text(value) or "")
        for key, value in doc.items()
        if key not in _STAGE_FIELDS and not isinstance(value, (dict, list)) and value is not None
    ]
    return StageView(
        name=name,
        status=text(doc.get("status"), 40) or text(summary.get("status"), 40),
        exit_code=integer(doc.get("exit_code")),
        signal=text(doc.get("signal"), 20),
        cpu_time=number(doc.get("cpu_time")),
        wall_time=number(doc.get("wall_time")),
        memory=integer(doc.get("memory")),
        message=text(doc.get("message"), 4000),
        limits={k: v for k, v in mapping(doc.get("limits")).items() if number(v) is not None},
        streams=[s for s in streams if s is not None],
        facts=facts,
    )


def stage_names(found: list[str], status: dict[str, Any]) -> list[str]:
    known = set(found) | set(mapping(status.get("stages")))
    return [s for s in STAGE_ORDER if s in known] + sorted(known - set(STAGE_ORDER))


@dataclass(frozen=True)
class SubtaskRow:
    name: str
    score: float | None
    points: float | None
    scoring: str | None
    passed: bool | None


def subtask_rows(status: dict[str, Any]) -> list[SubtaskRow]:
    rows = []
    for name, value in mapping(status.get("subtasks")).items():
        item = mapping(value)
        passed = item.get("passed")
        rows.append(
            SubtaskRow(
                name=str(name),
                score=number(item.get("score")),
                points=number(item.get("points")),
                scoring=text(item.get("scoring"), 40),
                passed=passed if isinstance(passed, bool) else None,
            )
        )
    return rows


@dataclass(frozen=True)
class Detail:
    """One submission's page."""

    summary: dict[str, Any]
    status: dict[str, Any]
    live: bool  # active: the page refreshes itself
    states: list[tuple[str, str]]
    stages: list[StageView]
    tests: list[TestRow]
    subtasks: list[SubtaskRow]
    events: list[dict[str, Any]]
    errors: list[tuple[str, str]] = field(default_factory=list)
    extra: list[tuple[str, str]] = field(default_factory=list)


_SHOWN_ELSEWHERE = frozenset(
    {"id", "state", "outcome", "states", "stages", "tests", "errors", "updated_at", "score", "max_score"}
    | {"attempts", "worker", "host", "reason", "message", "subtasks", "failed_subtasks", "tests_done", "tests_total"}
)


def detail(
    name: str,
    status: dict[str, Any] | None,
    stages: dict[str, dict[str, Any] | TooLarge | None],
    tests: dict[str, dict[str, Any] | TooLarge | None],
    events: list[dict[str, Any]],
    *,
    live: bool,
) -> Detail:
    data = status or {}
    rows = test_rows(data, tests)
    summaries = mapping(data.get("stages"))
    errors = []
    raw_errors = data.get("errors")
    for err in raw_errors if isinstance(raw_errors, list) else []:
        item = mapping(err)
        errors.append((text(item.get("where"), 200) or "", text(item.get("message"), 4000) or ""))
    extra = [
        (key, text(value, 4000) if not isinstance(value, (dict, list)) else _compact(value))
        for key, value in data.items()
        if key not in _SHOWN_ELSEWHERE and value is not None
    ]
    summary = summarize(name, status, rows)
    if summary["message"] is None:
        # The final transition's message (a compiler's last lines, say) is kept in events.jsonl.
        final = [e for e in events if e.get("event") == summary["state"] and text(e.get("message"))]
        summary["message"] = text(final[-1]["message"]) if final else None
    return Detail(
        summary=summary,
        status=data,
        live=live,
        states=[(str(k), text(v, 40) or "") for k, v in mapping(data.get("states")).items()],
        stages=[stage_view(s, stages.get(s), mapping(summaries.get(s))) for s in stage_names(list(stages), data)],
        tests=rows,
        subtasks=subtask_rows(data),
        events=events,
        errors=errors,
        extra=[(k, v or "") for k, v in extra],
    )


def _compact(value: Any) -> str:
    out = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    return out if len(out) <= 4000 else out[:3999] + "…"
