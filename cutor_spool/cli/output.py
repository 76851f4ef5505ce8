"""All command output goes through here: JSON for machines, short lines for people."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from cutor_spool.documents.states import Outcome, State
from cutor_spool.documents.status import StatusDocument

EXIT_OK = 0  # done, and the outcome is ok or accepted
EXIT_FAILED = 1  # done, and the submission's code failed (compile error, limits, wrong answer, ...)
EXIT_USAGE = 2  # bad command line (click's own)
EXIT_INVALID = 3  # the submission is invalid
EXIT_ERROR = 4  # the system gave up on it (state error)
EXIT_TIMEOUT = 5  # --wait/--timeout ran out first
EXIT_NOT_FOUND = 6
EXIT_CANCELLED = 7  # it ended cancelled (`cutor-spool cancel`)

GOOD_OUTCOMES = frozenset({Outcome.OK, Outcome.ACCEPTED})


def exit_code(status: StatusDocument | None) -> int:
    if status is None:
        return EXIT_TIMEOUT
    if status.state == State.INVALID:
        return EXIT_INVALID
    if status.state == State.ERROR:
        return EXIT_ERROR
    if status.state == State.CANCELLED:
        return EXIT_CANCELLED
    return EXIT_OK if status.outcome in GOOD_OUTCOMES else EXIT_FAILED


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def say(message: str, *, err: bool = False) -> None:
    click.echo(message, err=err)


def color(text: str, good: bool | None) -> str:
    """Green or red on a terminal; plain text elsewhere and when NO_COLOR is set (no-color.org)."""
    if not sys.stdout.isatty() or good is None or os.environ.get("NO_COLOR"):
        return text
    return click.style(text, fg="green" if good else "red", bold=True)


def human_size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n}"


def describe_event(ev: dict[str, Any]) -> str:
    kind = ev.get("event", "?")
    parts = [kind]
    if "success" in ev:
        parts.append("ok" if ev["success"] else "failed")
    for key in ("test", "verdict", "outcome", "message", "reason"):
        if ev.get(key) not in (None, ""):
            parts.append(f"{key}={ev[key]}" if key in ("test",) else str(ev[key]))
    return " ".join(parts)


def summary(status: StatusDocument) -> str:
    head = f"{status.id}: {status.state}"
    if status.outcome:
        head += f" ({color(status.outcome, status.outcome in GOOD_OUTCOMES)})"
    if status.score is not None:
        head += f" score {status.score:g}/{status.max_score or 0:g}"
    lines = [head] + [
        f"  {name} {s.status} {s.cpu_time:.3f}s cpu {human_size(s.memory)}" for name, s in status.stages.items()
    ]
    for err in status.errors or []:
        lines.append(f"  - {err.where}: {err.message}")
    if status.reason:
        lines.append(f"  reason: {status.reason}")
    return "\n".join(lines)
