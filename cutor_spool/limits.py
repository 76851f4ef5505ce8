"""Per-stage limits: the partial form written in YAML, and the resolved form a stage runs with.

A stage's limits are layered: the spool's `limits.default`, then the spool's per-stage default
(`limits.stages.<stage>`), then what the submission asks for. Asking above the spool's
`limits.maximum` makes the submission `invalid` (with the field's path), never a silent clamp.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationInfo, WithJsonSchema, field_validator

from cutor_spool.units import (
    DURATION_PATTERN,
    SIZE_PATTERN,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": DURATION_PATTERN}],
            "description": "seconds, or a duration such as 2s, 500ms, 1.5m",
        }
    ),
]
Size = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": SIZE_PATTERN}],
            "description": "bytes, or a size such as 256MiB, 1GiB, 64KiB",
        }
    ),
]

LIMIT_KEYS = ("cpu_time", "wall_time", "memory", "processes", "file_size", "open_files", "stack", "output")
# Optional keys: 0 is "off" (no such limit), and the default.
OPTIONAL_KEYS = ("address_space",)
# RLIMIT_AS below this fails the dynamic loader, the shell, an interpreter before the job runs.
MIN_ADDRESS_SPACE = 16 * 1024 * 1024
_MINIMUM: dict[str, float] = {
    "cpu_time": 0.01,
    "wall_time": 0.01,
    "memory": 4 * 1024 * 1024,
    "processes": 1,
    "file_size": 0,
    "open_files": 4,
    "stack": 64 * 1024,
    "output": 0,
    "address_space": 0,
}


def _show(key: str, value: float) -> str:
    if key in ("cpu_time", "wall_time"):
        return format_duration(value)
    if key in ("memory", "file_size", "stack", "output", "address_space"):
        return format_size(int(value))
    return str(int(value))


def within(key: str, value: float, maximum: float) -> bool:
    """Whether `value` is allowed under `maximum`; for an optional key 0 is *unlimited* on both sides."""
    if key in OPTIONAL_KEYS:
        return maximum == 0 or 0 < value <= maximum
    return value <= maximum


class LimitsSpec(BaseModel):
    """Limits as written in YAML: every key optional. Validated against the spool's maximum when
    the validation context carries one (`{"maximum": Limits}`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cpu_time: Duration | None = None
    wall_time: Duration | None = None
    memory: Size | None = None
    processes: int | None = None
    file_size: Size | None = None
    open_files: int | None = None
    stack: Size | None = None
    output: Size | None = None
    # RLIMIT_AS (virtual memory, reserved or not): 0 is off. See docs/judge.md for the JVM and Go.
    address_space: Size | None = None

    @field_validator("*", mode="after")
    @classmethod
    def _within_bounds(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is None:
            return None
        key = info.field_name or ""
        if value < _MINIMUM[key]:
            raise ValueError(f"{_show(key, value)} is below the smallest allowed {_show(key, _MINIMUM[key])}")
        if key == "address_space" and 0 < value < MIN_ADDRESS_SPACE:
            least = _show(key, MIN_ADDRESS_SPACE)
            raise ValueError(f"{_show(key, value)} is below the smallest allowed {least} (0: off)")
        maximum = (info.context or {}).get("maximum")
        if isinstance(maximum, Limits) and not within(key, value, getattr(maximum, key)):
            shown = _show(key, value) if value else "off (0)"
            raise ValueError(f"{shown} is above the spool's maximum of {_show(key, getattr(maximum, key))}")
        return value

    def values(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


@dataclass(frozen=True)
class Limits:
    """Resolved limits: every key set. Times in seconds, sizes in bytes."""

    cpu_time: float
    wall_time: float
    memory: int
    processes: int
    file_size: int
    open_files: int
    stack: int
    output: int
    address_space: int = 0  # RLIMIT_AS in bytes; 0: off

    def over(self, *layers: LimitsSpec | None) -> Limits:
        """These limits with each layer's set keys applied in turn."""
        merged = dict(self.__dict__)  # its fields: numbers only (asdict's deep copy is 10x slower)
        for layer in layers:
            if layer is not None:
                merged.update(layer.values())
        return Limits(**merged)

    def to_json(self) -> dict[str, float | int]:
        return dict(self.__dict__)

    @classmethod
    def from_spec(cls, spec: LimitsSpec) -> Limits:
        missing = [k for k in LIMIT_KEYS if getattr(spec, k) is None]
        if missing:
            raise ValueError(f"limits are missing {', '.join(missing)}")
        return cls(**spec.values())
