"""Why a claim's work must stop: set by the lease heartbeat (lease lost) or by a shutdown, checked
by whatever runs the claim's work between its steps."""

from __future__ import annotations

import json
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from cutor_spool.errors import CancelRequested, LeaseLost, Shutdown

CANCELLED = "cancelled"  # the reason set when a client's cancel request was found


class Cancelled:
    """Why a claim's work must stop; set by the lease heartbeat or by a shutdown."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""

    def set(self, reason: str) -> None:
        self.reason = self.reason or reason
        self.event.set()

    def check(self) -> None:
        if self.event.is_set():
            if self.reason == "shutdown":
                raise Shutdown()
            if self.reason == CANCELLED:
                raise CancelRequested("cancelled on request")
            raise LeaseLost(self.reason)


# -- a client's request to cancel a submission: `cancel/<id>` --------------------------------------
#
# `cutor-spool cancel ID` creates `cancel/<id>` (exclusively: the first request stands) with who
# asked and when. A worker honours it at the claim (the submission ends `cancelled` without
# running) or, while it runs, at its next heartbeat (the stage's sandbox is killed, the submission
# ends `cancelled`, its results so far kept). Only a request owned by root or by the submission's
# submitter counts: in a shared spool nobody cancels another user's work. The worker removes the
# request when the submission ends, whatever its end.


@dataclass(frozen=True)
class CancelRequest:
    by: str
    uid: int
    at: str


def request_cancel(cancels: Path, entry_id: str, *, by: str, at: str) -> bool:
    """Writes the request; False when one is already there."""
    data = json.dumps({"by": by, "at": at}).encode()
    try:
        fd = os.open(cancels / entry_id, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def pending_cancel(cancels: Path, entry_id: str, submitter: int | None) -> CancelRequest | None:
    """The request for this entry that its submitter or root made, or None."""
    try:
        fd = os.open(cancels / entry_id, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:  # none (or a symlink, which is nobody's request)
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid not in (0, submitter):
            return None
        raw = os.read(fd, 4096)
    finally:
        os.close(fd)
    try:
        data = json.loads(raw)
        return CancelRequest(by=str(data.get("by") or st.st_uid), uid=st.st_uid, at=str(data.get("at") or ""))
    except (ValueError, AttributeError):
        return CancelRequest(by=str(st.st_uid), uid=st.st_uid, at="")


def clear_cancel(cancels: Path, entry_id: str) -> None:
    try:
        os.unlink(cancels / entry_id)
    except FileNotFoundError:
        pass
