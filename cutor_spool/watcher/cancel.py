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


# -- a client's request to cancel a submission: `cancel/<id>.<uid>` ---------------------------------
#
# `cutor-spool cancel ID` creates `cancel/<id>.<uid>` (its own uid in the name, so that nobody can
# take another user's request name in advance) with who asked and when. A worker honours the
# request of the submission's submitter or of root, and only from a file that uid owns: at the claim
# (the submission ends `cancelled` without running) or, while it runs, at its next heartbeat (the
# stage's sandbox is killed, the submission ends `cancelled`, its results so far kept). Requests of
# anyone else are never read. The worker removes the requests when the submission ends.


@dataclass(frozen=True)
class CancelRequest:
    by: str
    uid: int
    at: str


def _name(entry_id: str, uid: int) -> str:
    return f"{entry_id}.{uid}"


def request_cancel(cancels: Path, entry_id: str, *, uid: int, by: str, at: str) -> bool:
    """Writes this user's request; False when it is already there."""
    data = json.dumps({"by": by, "at": at}).encode()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(cancels / _name(entry_id, uid), flags, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def pending_cancel(cancels: Path, entry_id: str, submitter: int | None) -> CancelRequest | None:
    """The request its submitter or root made for this entry, or None."""
    for uid in dict.fromkeys(u for u in (submitter, 0) if u is not None):
        request = _read_request(cancels / _name(entry_id, uid), uid)
        if request is not None:
            return request
    return None


def _read_request(path: Path, uid: int) -> CancelRequest | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:  # none (or a symlink, which is nobody's request)
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != uid:
            return None
        raw = os.read(fd, 4096)
    finally:
        os.close(fd)
    try:
        data = json.loads(raw)
        return CancelRequest(by=str(data.get("by") or uid), uid=uid, at=str(data.get("at") or ""))
    except (ValueError, AttributeError):
        return CancelRequest(by=str(uid), uid=uid, at="")


def clear_cancel(cancels: Path, entry_id: str, submitter: int | None) -> None:
    for uid in dict.fromkeys(u for u in (submitter, 0) if u is not None):
        try:
            os.unlink(cancels / _name(entry_id, uid))
        except FileNotFoundError:
            pass
