"""Human units for limits: durations (`2s`, `500ms`, `7d`) and sizes (`256MiB`, `1GB`)."""

from __future__ import annotations

import math
import re

_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_NUMBER_UNIT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")

DURATION_PATTERN = r"^\s*[0-9]+(\.[0-9]+)?\s*(ns|us|ms|s|m|min|h|d|w)?\s*$"
SIZE_PATTERN = r"^\s*[0-9]+(\.[0-9]+)?\s*([kKmMgGtT]?i?[bB]?)\s*$"


def parse_duration(value: object) -> float:
    """Seconds from `2s`, `1.5m`, `250ms` or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 2s or 500ms, not a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _NUMBER_UNIT.match(value)
        unit = match.group(2) if match else None
        if not match or (unit and unit not in _DURATION_UNITS):
            raise ValueError(f"{value!r} is not a duration (examples: 2s, 500ms, 1.5m, 7d)")
        seconds = float(match.group(1)) * _DURATION_UNITS[unit or "s"]
    else:
        raise ValueError(f"expected a duration such as 2s or 500ms, got {type(value).__name__}")
    if seconds < 0 or math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"{value!r} is not a finite, non-negative duration")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from `256MiB`, `1GB`, `64k` or a bare number of bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 256MiB, not a boolean")
    if isinstance(value, int):
        size = value
    elif isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{value!r} is not a whole number of bytes")
        size = int(value)
    elif isinstance(value, str):
        match = _NUMBER_UNIT.match(value)
        unit = match.group(2).lower() if match else None
        if not match or unit not in _SIZE_UNITS:
            raise ValueError(f"{value!r} is not a size (examples: 256MiB, 1GiB, 64KiB, 1000000)")
        size = int(float(match.group(1)) * _SIZE_UNITS[unit or ""])
    else:
        raise ValueError(f"expected a size such as 256MiB, got {type(value).__name__}")
    if size < 0:
        raise ValueError(f"{value!r} is negative")
    if size > 1 << 62:
        raise ValueError(f"{value!r} is too large")
    return size


def format_size(size: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor:
            return f"{size / factor:.4g}{unit}"
    return f"{size}B"


def format_duration(seconds: float) -> str:
    if seconds >= 86400 and seconds % 86400 == 0:
        return f"{int(seconds // 86400)}d"
    if seconds >= 1 or seconds == 0:
        return f"{seconds:g}s"
    return f"{seconds * 1000:g}ms"
