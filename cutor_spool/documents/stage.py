"""A stage's output as written to `result/<stage>.json` and `result/tests/<name>.json`.

DESIGN section 4: one shape for every stage (the sandbox's run of a compile, a run, a test or a
checker). The field names and values are the format that clients read: `stdout`, `stderr` and
`output` (both, interleaved) as text, with `<key>_base64` holding the exact bytes when they are
not valid UTF-8; times in seconds, memory in bytes. A judged test adds its verdict, score and the
checker's own stage output. The vocabulary (a stage's status, a test's verdict) lives here so
that every reader, whatever its layer, names the same values.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Literal

from cutor_spool.documents.base import Document, Number


class StageStatus(StrEnum):
    OK = "ok"
    RUNTIME_ERROR = "runtime_error"
    SIGNALED = "signaled"
    TIME_LIMIT = "time_limit"
    WALL_TIME_LIMIT = "wall_time_limit"
    MEMORY_LIMIT = "memory_limit"
    OUTPUT_LIMIT = "output_limit"
    INTERNAL_ERROR = "internal_error"
    # killed by the spool's seccomp filter (`sandbox.seccomp.action: kill`): a denied system call
    SECURITY_VIOLATION = "security_violation"


class Verdict(StrEnum):
    ACCEPTED = "accepted"
    PARTIAL = "partial"  # a checker gave a score fraction strictly between 0 and 1
    WRONG_ANSWER = "wrong_answer"
    TIME_LIMIT = "time_limit"
    MEMORY_LIMIT = "memory_limit"
    OUTPUT_LIMIT = "output_limit"
    RUNTIME_ERROR = "runtime_error"
    INTERNAL_ERROR = "internal_error"
    SKIPPED = "skipped"  # not run: short-circuit after an earlier failure
    IDLENESS_LIMIT = "idleness_limit"  # interactive: neither side used CPU for the idleness limit

    @property
    def code(self) -> str:
        """The short form judges print (DMOJ's and Codeforces' letters)."""
        return _CODES[self]


_CODES = {
    Verdict.ACCEPTED: "AC",
    Verdict.PARTIAL: "PA",
    Verdict.WRONG_ANSWER: "WA",
    Verdict.TIME_LIMIT: "TLE",
    Verdict.MEMORY_LIMIT: "MLE",
    Verdict.OUTPUT_LIMIT: "OLE",
    Verdict.RUNTIME_ERROR: "RTE",
    Verdict.INTERNAL_ERROR: "IE",
    Verdict.SKIPPED: "SC",
    Verdict.IDLENESS_LIMIT: "ILE",
}


class Truncated(Document):
    """Whether the runner stopped reading a stream at its byte cap."""

    stdout: bool
    stderr: bool


class AppliedLimits(Document):
    """The limits a stage ran with (seconds, bytes, counts)."""

    cpu_time: Number
    wall_time: Number
    memory: int
    processes: int
    file_size: int
    open_files: int
    stack: int
    output: int
    address_space: int = 0  # RLIMIT_AS; 0: off


class StageDocument(Document):
    nullable: ClassVar[frozenset[str]] = frozenset({"exit_code", "signal"})

    stage: str
    status: StageStatus
    stdout: str
    stdout_base64: str | None = None
    stderr: str
    stderr_base64: str | None = None
    output: str
    output_base64: str | None = None
    exit_code: int | None
    signal: str | None  # the signal's name (SIGKILL), when one ended it
    truncated: Truncated
    cpu_time: float
    wall_time: float
    memory: int
    limits: AppliedLimits
    backend: str = ""
    message: str | None = None
    # A judged test's (result/tests/<name>.json):
    test: str | None = None
    verdict: Verdict | None = None
    score: Number | None = None
    points: Number | None = None
    fraction: Number | None = None
    feedback: str | None = None
    checker: StageDocument | None = None  # the checker program's own run, when there is one
    interactor: StageDocument | None = None  # an interactive test's interactor run
    transcript: str | None = None  # what the interactor wrote to /work/transcript (first 64 KiB)
    transcript_truncated: bool | None = None
    processes: list[StageDocument] | None = None  # a communication test's processes after the first
    generated: Literal["generated", "cached"] | None = None  # a generated input: made now, or from the cache
