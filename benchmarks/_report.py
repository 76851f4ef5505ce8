"""The one table of `run_all.py`: what a row is, how it is checked against its target, and how it
is printed (a Markdown table, so that a run can be pasted into docs/benchmarks.md as it is).

A row's ratio is always `value / baseline`, whatever the unit: below 1 the figure is smaller than
its baseline (faster, for a time; slower, for a rate). Targets say which way is good.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Unit(StrEnum):
    US = "µs"
    MS = "ms"
    S = "s"
    RATE = "/s"
    COUNT = ""
    PERCENT = "%"
    MIB = "MiB"


class Check(StrEnum):
    BELOW = "below"  # value < limit
    OVERHEAD_BELOW = "overhead_below"  # value - baseline < limit (a cost on top of the baseline)
    RATIO_AT_MOST = "ratio_at_most"  # value / baseline <= limit
    AT_LEAST = "at_least"  # value >= limit (a rate's floor)


@dataclass(frozen=True)
class Target:
    check: Check
    limit: float
    text: str  # as the table shows it

    def met(self, value: float, baseline: float | None) -> tuple[bool, str] | None:
        """(met, what was checked) or None when the figure it needs is missing."""
        if self.check == Check.BELOW:
            return value < self.limit, ""
        if self.check == Check.AT_LEAST:
            return value >= self.limit, ""
        if baseline is None:
            return None
        if self.check == Check.OVERHEAD_BELOW:
            overhead = value - baseline
            return overhead < self.limit, f"+{overhead:.1f}"
        ratio = value / baseline
        return ratio <= self.limit, ratio_text(ratio)


@dataclass(frozen=True)
class Spec:
    """A row as it is known before anything is measured: every run prints every row."""

    key: str
    figure: str  # may name counts: "{throughput} submissions"
    unit: Unit
    baseline: str | None = None
    target: Target | None = None


@dataclass(frozen=True)
class Measured:
    value: float
    baseline: float | None = None
    note: str = ""  # why there is no baseline value


@dataclass(frozen=True)
class Row:
    spec: Spec
    figure: str
    measured: Measured | None
    note: str = ""  # why there is no value (skipped, failed)

    @property
    def ratio(self) -> float | None:
        m = self.measured
        if m is None or m.baseline is None or m.baseline == 0:
            return None
        return m.value / m.baseline

    @property
    def met(self) -> bool | None:
        if self.spec.target is None or self.measured is None:
            return None
        checked = self.spec.target.met(self.measured.value, self.measured.baseline)
        return None if checked is None else checked[0]

    def met_text(self) -> str:
        target = self.spec.target
        if self.measured is None:
            return self.note or "not measured"
        if target is None:
            return "—"
        checked = target.met(self.measured.value, self.measured.baseline)
        if checked is None:
            return "no baseline"
        met, detail = checked
        word = "yes" if met else "**NO**"
        unit = f" {self.spec.unit}" if target.check == Check.OVERHEAD_BELOW else ""
        return f"{word} ({detail}{unit})" if detail else word

    def to_json(self) -> dict[str, Any]:
        m = self.measured
        return {
            "key": self.spec.key,
            "figure": self.figure,
            "unit": str(self.spec.unit),
            "value": None if m is None else m.value,
            "baseline": self.spec.baseline,
            "baseline_value": None if m is None else m.baseline,
            "ratio": self.ratio,
            "target": None if self.spec.target is None else self.spec.target.text,
            "met": self.met,
            "note": self.note,
        }


def number(value: float, unit: Unit) -> str:
    if not math.isfinite(value):
        return str(value)
    if unit == Unit.S:
        return f"{value:.3f} s"
    if unit == Unit.RATE:
        return f"{value:.1f}/s"
    if unit == Unit.COUNT:
        return f"{value:.0f}"
    if unit == Unit.PERCENT:
        return f"{value:.2f}%"
    digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    return f"{value:.{digits}f} {unit}"


def ratio_text(ratio: float) -> str:
    """Three significant digits: 0.202x must not print as 0.20x next to a target of <= 0.20x."""
    if ratio >= 100:
        return f"{ratio:.0f}x"
    if ratio >= 10:
        return f"{ratio:.1f}x"
    if ratio >= 1:
        return f"{ratio:.2f}x"
    return f"{ratio:.3f}x"


def rows_from(
    specs: list[Spec], measured: dict[str, Measured], notes: dict[str, str], counts: dict[str, Any]
) -> list[Row]:
    return [
        Row(
            spec,
            spec.figure.format(**counts),
            measured.get(spec.key),
            notes.get(spec.key, "" if spec.key in measured else "not measured"),
        )
        for spec in specs
    ]


HEADER = ("figure", "value", "baseline", "ratio", "target", "met?")


def render(rows: list[Row], sections: dict[str, str]) -> str:
    """A Markdown table; `sections` maps a key prefix to the heading row printed before it."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(["---", "--:", "---", "--:", "---", "---"]) + "|"]
    current = None
    for row in rows:
        section = row.spec.key.split(".")[0]
        if section != current and section in sections:
            lines.append(f"| **{sections[section]}** | | | | | |")
        current = section
        m = row.measured
        value = number(m.value, row.spec.unit) if m is not None else "—"
        baseline = row.spec.baseline or "—"
        if m is not None and m.baseline is not None:
            baseline = f"{baseline}: {number(m.baseline, row.spec.unit)}"
        elif m is not None and m.note and row.spec.baseline:
            baseline = f"{baseline} ({m.note})"
        ratio = row.ratio
        cells = [
            row.figure,
            value,
            baseline,
            "—" if ratio is None else ratio_text(ratio),
            row.spec.target.text if row.spec.target else "—",
            row.met_text(),
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)
