"""The vocabulary of a submission's result: where it lives, its states and its outcomes.

The state machine (DESIGN section 4, the seeds' status flow and the judge diagram of seed 003):

    queued -> claimed -> [installing_dependencies -> dependencies_installed]
           -> [compiling -> compiled] -> running | testing -> done | invalid | error

and from queued or any state before the end: -> cancelled (`cutor-spool cancel`).
"""

from __future__ import annotations

from enum import StrEnum

RESULT_DIR = "result"
ATTEMPTS_LOG = f"{RESULT_DIR}/attempts.jsonl"


class State(StrEnum):
    QUEUED = "queued"
    CLAIMED = "claimed"
    INSTALLING_DEPENDENCIES = "installing_dependencies"
    DEPENDENCIES_INSTALLED = "dependencies_installed"
    COMPILING = "compiling"
    COMPILED = "compiled"
    RUNNING = "running"
    TESTING = "testing"
    DONE = "done"
    INVALID = "invalid"
    ERROR = "error"
    CANCELLED = "cancelled"  # stopped by `cutor-spool cancel`: `cancelled_by` says who, `states` when


TERMINAL = frozenset({State.DONE, State.INVALID, State.ERROR, State.CANCELLED})


class Outcome(StrEnum):
    OK = "ok"
    COMPILE_ERROR = "compile_error"
    DEPENDENCY_FAILURE = "dependency_failure"
    RUNTIME_ERROR = "runtime_error"
    TIME_LIMIT = "time_limit"
    MEMORY_LIMIT = "memory_limit"
    OUTPUT_LIMIT = "output_limit"
    ACCEPTED = "accepted"
    PARTIAL = "partial"
    REJECTED = "rejected"
