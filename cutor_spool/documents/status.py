"""`result/status.json`: where a submission is and how it went (DESIGN section 4).

Rewritten atomically at every transition by its worker (`runner/results.py`); read by
`cutor-spool status|wait|list`, the status page and any client. `outcome` is always written (null
until the end); every other optional field appears once it has a value: the judge's progress
(`test`, `tests_done`, `tests_total`, `verdicts`), its results (`tests`, `score`, `max_score`,
`subtasks`, `failed_subtasks`), an invalid submission's `errors`, the system's `reason` for an
`error`.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from cutor_spool.atomic import read_json
from cutor_spool.documents.base import Document, Number
from cutor_spool.documents.stage import StageStatus, Verdict
from cutor_spool.documents.states import RESULT_DIR, TERMINAL, Outcome, State


class StageSummary(Document):
    """A stage in brief (the whole of it is in its own file)."""

    nullable: ClassVar[frozenset[str]] = frozenset({"exit_code"})

    status: StageStatus
    exit_code: int | None
    cpu_time: float
    wall_time: float
    memory: int


class Problem(Document):
    """One thing wrong with an invalid submission: the field's path and what is wrong."""

    where: str
    message: str


class SubtaskResult(Document):
    score: Number
    points: Number
    scoring: str
    passed: bool
    skipped_for: str | None = None  # the failed prerequisite (`depends_on`) that made it score 0


class HelperSlot(Document):
    """A slot a submission used besides its own (an interactive problem's interactor, a
    communication task's manager and processes), by its role: its uid and, with CPU pinning,
    its CPU."""

    uid: int
    cpu: int | None = None


class StatusDocument(Document):
    nullable: ClassVar[frozenset[str]] = frozenset({"outcome"})

    id: str
    state: State
    outcome: Outcome | None = None
    attempts: int | None = None
    worker: str | None = None
    host: str | None = None
    backend: str | None = None
    states: dict[str, str] = {}  # state -> when it was reached (ISO 8601, UTC)
    stages: dict[str, StageSummary] = {}
    updated_at: str | None = None
    sandbox_uid: int | None = None
    sandbox_cpu: int | None = None  # with CPU pinning (spool.yaml sandbox.pinning): the CPU its stages ran on
    helper_sandboxes: dict[str, HelperSlot] | None = None  # the other slots it used: an interactor's...
    submitter: int | None = None  # the uid that owned the dropped directory
    original_name: str | None = None  # a drop whose name is not a valid id
    duplicate_of: str | None = None
    rerun_of: str | None = None  # `cutor-spool rerun`: the submission this one runs again (kept as it was)
    success: bool | None = None  # did it compile
    test: str | None = None  # the test being judged
    tests_done: int | None = None
    tests_total: int | None = None
    verdicts: dict[str, int] | None = None  # verdict -> how many tests so far
    tests: dict[str, Verdict] | None = None  # test -> verdict, at the end
    score: Number | None = None
    max_score: Number | None = None
    subtasks: dict[str, SubtaskResult] | None = None
    failed_subtasks: list[str] | None = None
    message: str | None = None  # not written today (a transition's message goes to events.jsonl); older files
    errors: list[Problem] | None = None
    reason: str | None = None  # why the system gave up (state error)
    cancelled_by: str | None = None  # who asked (user name, or uid), when the state is cancelled

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def finished_at(self) -> str | None:
        return (self.states.get(self.state) if self.terminal else None) or self.updated_at


def read_status(entry: Path) -> StatusDocument | None:
    """The entry's status.json; None when it is missing or damaged."""
    try:
        data = read_json(entry / RESULT_DIR / "status.json")
    except (OSError, ValueError):
        return None
    return StatusDocument.read(data)
