"""`cutor-spool list`'s filters: by state, outcome, end time and id prefix."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import click

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str | None, *, now: datetime | None = None) -> datetime | None:
    """`90s`, `30m`, `2h`, `7d`, `1w` ago, or an ISO 8601 time (UTC when it names no zone)."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if match:
        return (now or datetime.now(UTC)) - timedelta(seconds=float(match[1]) * _UNITS[match[2]])
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is neither a duration (30m, 2h, 7d) nor an ISO 8601 time") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def row_filter(
    *, states: set[str], outcomes: set[str], since: datetime | None, prefix: str
) -> Callable[[dict[str, Any]], bool]:
    def keep(row: dict[str, Any]) -> bool:
        if prefix and not str(row["id"]).startswith(prefix):
            return False
        if states and row.get("state") not in states:
            return False
        if outcomes and row.get("outcome") not in outcomes:
            return False
        if since is not None:
            ended = _time(row.get("ended"))
            return ended is not None and ended >= since
        return True

    return keep


def _time(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
