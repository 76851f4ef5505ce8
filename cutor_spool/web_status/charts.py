"""The front page's charts: queue depth, throughput and drop-to-final latency over the last hours.

Where each series comes from:

- **throughput** (submissions finished per interval) and **latency** (p50 and p95, per interval, of
  the time from `states.queued` to the final state, i.e. drop to result) come from the index: every
  finished submission's summary keeps its finish time and that latency as numbers (worked out once,
  when the result is read), so these series cover the whole window even for hours when nobody
  looked at the page, and cost a pass over two columns per regeneration;
- **queue depth** (entries waiting in incoming/, and running) cannot be rebuilt from done/ alone
  (an entry still waiting has no result): each regeneration appends a sample to
  `status/_samples.json`, at most one per SAMPLE_EVERY seconds, and drops those older than the
  window. The series has gaps where no one regenerated the page, which is what was known then.
  Two writers racing over the file lose a sample at worst.

The series are embedded in index.html as JSON (`<script type="application/json">`, data, never
run) and drawn by uPlot (static/uPlot.iife.min.js, vendored, MIT) from page.js.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

from cutor_spool.atomic import write_bytes

SAMPLES_NAME = "_samples.json"
WINDOW = 6 * 3600.0  # seconds of history the charts show at most
SAMPLE_EVERY = 5.0
POINTS = 120  # about this many intervals across the span shown
STEPS = (10, 30, 60, 120, 300, 600, 900, 1800, 3600)  # interval lengths, seconds


def unix(value: str | None) -> float | None:
    """A spool timestamp (`2026-01-02T03:04:05.678Z`) as Unix time; None if absent or garbled."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def between(start: str | None, end: str | None) -> float | None:
    """Seconds from `start` to `end` (two spool timestamps), None unless both are readable."""
    a, b = unix(start), unix(end)
    return None if a is None or b is None else round(max(0.0, b - a), 3)


def read_samples(path: Path) -> list[list[float]]:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return []
    if not isinstance(data, list):
        return []
    return [s for s in data if isinstance(s, list) and len(s) == 3 and all(isinstance(v, int | float) for v in s)]


def record_sample(path: Path, now: float, queued: int, running: int) -> list[list[float]]:
    """Appends (now, queued, running) unless the last sample is recent; returns the samples kept."""
    samples = [s for s in read_samples(path) if now - WINDOW <= s[0] <= now + 60]
    if any(abs(now - s[0]) < SAMPLE_EVERY for s in samples):
        return samples
    samples.append([round(now, 3), queued, running])
    samples.sort()  # two writers' clocks may differ a little
    write_bytes(path, json.dumps(samples, separators=(",", ":")).encode(), fsync=False)
    return samples


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q of the values at or below it."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _step(span: float) -> int:
    for step in STEPS:
        if span / step <= POINTS:
            return step
    return STEPS[-1]


def _finishes(
    finished: list[float | None], latency: list[float | None], floor: float, now: float
) -> list[tuple[float, float | None]]:
    """(finish time, seconds from drop to result or None) of the results finished since `floor`."""
    return [(at, lat) for at, lat in zip(finished, latency, strict=True) if at is not None and floor <= at <= now + 60]


def _per_interval(done: list[tuple[float, float | None]], start: float, step: int, count: int) -> dict[str, list[Any]]:
    finishes = [0] * count
    latencies: list[list[float]] = [[] for _ in range(count)]
    for at, latency in done:
        i = min(count - 1, max(0, int((at - start) // step)))
        finishes[i] += 1
        if latency is not None:
            latencies[i].append(latency)
    for values in latencies:
        values.sort()
    return {
        "finished": finishes,
        "per_minute": [round(n * 60 / step, 3) for n in finishes],
        "p50": [round(_percentile(v, 0.5), 3) if v else None for v in latencies],
        "p95": [round(_percentile(v, 0.95), 3) if v else None for v in latencies],
    }


def series(
    finished: list[float | None], latency: list[float | None], samples: list[list[float]], now: float
) -> dict[str, Any]:
    """The charts' data. `finished` (Unix time) and `latency` (seconds from queued to finished) are
    the index's columns, one item per result (model.summarize works them out once per result)."""
    done = _finishes(finished, latency, now - WINDOW, now)
    firsts = [t for t, _ in done] + [s[0] for s in samples]
    first = max(now - WINDOW, min(firsts)) if firsts else now - 3600
    step = _step(max(now - first, 60.0))
    start = math.floor(first / step) * step
    count = max(1, math.ceil((now - start) / step))
    shown = [s for s in samples if s[0] >= start]
    return {
        "step": step,
        "times": [start + i * step for i in range(count)],
        **_per_interval(done, start, step, count),
        "samples": {
            "times": [s[0] for s in shown],
            "queued": [s[1] for s in shown],
            "running": [s[2] for s in shown],
        },
    }
