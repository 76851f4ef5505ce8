"""How an entry ends when it is not run, or no longer retried: the generic worker's vocabulary
(watcher/worker.py) for "finish this entry as invalid or error, for this reason".

Four checks come before any work, the same for every queue: a name in incoming/ that is not a
valid id, an id that is already active or done (the newcomer is kept under a distinct name, never
run twice and never lost), a claim past `max_attempts` (the system failed its earlier claims, or
their leases expired while their workers lived), and one past `max_lost_leases` (its earlier
claims' workers died holding it: it may be what kills them; see lost.py). The fifth ending is
giving up after a system failure on the last attempt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cutor_spool.documents.states import State
from cutor_spool.errors import SpoolIOError
from cutor_spool.watcher.claim import Claim
from cutor_spool.watcher.ids import duplicate_name
from cutor_spool.watcher.queue import SpoolQueue


class Cause(StrEnum):
    """Why an entry is finished without (or after) its work."""

    MISNAMED = "misnamed"  # its name in incoming/ is not a valid id
    DUPLICATE = "duplicate"  # its id is already active or done
    OUT_OF_ATTEMPTS = "out_of_attempts"  # claimed past max_attempts: its earlier claims never finished
    LOST_LEASES = "lost_leases"  # claimed past max_lost_leases: its workers died holding it
    GAVE_UP = "gave_up"  # the system failed its last attempt
    CANCELLED = "cancelled"  # its submitter (or root) asked: `cutor-spool cancel`


@dataclass(frozen=True)
class Ending:
    """How to finish an entry that is not run (or no longer retried): its final state, why, and
    the name it is committed under in done/ (None: its id)."""

    cause: Cause
    reason: str
    details: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    started: bool = False  # a cancel that stopped it while it ran

    @property
    def state(self) -> State:
        if self.cause is Cause.CANCELLED:
            return State.CANCELLED
        return State.INVALID if self.cause in (Cause.MISNAMED, Cause.DUPLICATE) else State.ERROR

    @property
    def ran(self) -> bool:
        """Whether this attempt ran (its results so far stay) or is refused before it started."""
        return self.cause is Cause.GAVE_UP or self.started

    @property
    def fields(self) -> dict[str, Any]:
        """The result's fields that say why: `errors` (with where) when invalid, `reason` when
        an error, after `details`."""
        if self.state is State.INVALID:
            return {**self.details, "errors": [{"where": "id", "message": self.reason}]}
        return {**self.details, "reason": self.reason}


def refusal(claim: Claim, queue: SpoolQueue, max_attempts: int, max_lost_leases: int) -> Ending | None:
    """Why this claim is to be finished without its work, or None."""
    if claim.original_name != claim.entry_id:
        reason = (
            f"{claim.original_name!r} is not a valid id: use letters, digits, '_' and '-', at most 128, "
            "starting with a letter or digit, and a directory"
        )
        return Ending(Cause.MISNAMED, reason, {"original_name": claim.original_name})
    try:
        known = queue.known_elsewhere(claim)
    except OSError as exc:  # active/ unreadable (NFS): the system's failure, not a bug
        raise SpoolIOError(f"{claim.entry_id}: cannot look for other claims of it: {exc.strerror}") from exc
    if known:
        final = duplicate_name(claim.entry_id, claim.token)
        reason = f"{claim.entry_id!r} is already active or done; this duplicate was not run and is kept as done/{final}"
        return Ending(Cause.DUPLICATE, reason, {"duplicate_of": claim.entry_id, "id": final}, name=final)
    if claim.counted_attempts > max_attempts:
        reason = (
            f"gave up after {claim.counted_attempts - 1} attempt(s) that did not finish "
            "(the system failed it, or its worker lived but lost the lease, each time)"
        )
        return Ending(Cause.OUT_OF_ATTEMPTS, reason)
    if claim.lost_leases >= max_lost_leases:
        reason = (
            f"gave up after {claim.lost_leases} claims whose worker died while holding it "
            f"(max_lost_leases: {max_lost_leases}): it may be what takes its workers down"
        )
        return Ending(Cause.LOST_LEASES, reason)
    return None
