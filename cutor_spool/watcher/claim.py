"""One claim of one spool entry: its paths (every one holds the claim's token), its lease's
heartbeat, its commit into done/ and its hand-back to incoming/. `SpoolQueue.claim` (queue.py)
makes one; queue.py's docstring is the protocol.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cutor_spool.atomic import append_line, read_json
from cutor_spool.errors import LeaseLost, SpoolIOError
from cutor_spool.layout import QueueDirs
from cutor_spool.watcher.clock import stamp
from cutor_spool.watcher.ids import active_name, duplicate_name

log = logging.getLogger(__name__)

LEASE = ".lease"


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


@dataclass
class Claim:
    """One claim of one entry. Every path in it contains the claim's token."""

    dirs: QueueDirs
    entry_id: str
    token: str
    attempt: int  # counting every claim, released ones included
    counted_attempts: int  # claims that count towards max_attempts (see lost.py)
    original_name: str
    log_path: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    queued_at: float | None = None
    finished: bool = False  # committed or handed back: its paths are gone by our own doing
    committed: bool = False  # in done/: it ended
    submitter: int | None = None  # the uid that owned the dropped directory
    custody_failure: str | None = None  # why the entry could not be taken from its client
    lost_leases: int = 0  # earlier claims whose worker died holding them (max_lost_leases)
    # Waits `commit` runs first: the fsyncs of the final results, started when they were written
    # and finished while the worker released the sandbox (runner/results.py, `_write_status`).
    before_commit: list[Callable[[], object]] = field(default_factory=list)

    @property
    def anchor(self) -> Path:
        """The spool's own directory the claim lives in: nothing below it is opened through a
        symlink."""
        return self.dirs.active

    @property
    def path(self) -> Path:
        return self.dirs.active / active_name(self.entry_id, self.token)

    @property
    def lease(self) -> Path:
        return self.path / LEASE

    def heartbeat(self) -> None:
        """Stamps the lease with the filesystem's time (see `clock.stamp`); ENOENT means another
        worker reaped it."""
        try:
            stamp(self.lease)
        except FileNotFoundError as exc:
            raise LeaseLost(f"{self.entry_id}: lease {self.lease} is gone") from exc
        except OSError as exc:
            raise SpoolIOError(f"{self.entry_id}: cannot touch lease: {exc.strerror}") from exc

    def commit(self, final_name: str | None = None) -> Path:
        """Renames the claim into done/, once every wait in `before_commit` returned (one that
        raises stops the commit). A name already taken in done/ makes this a duplicate."""
        waits, self.before_commit = self.before_commit, []
        for wait in waits:
            wait()
        name = final_name or self.entry_id
        target = self.dirs.done / name
        try:
            os.rename(self.path, target)
        except FileNotFoundError as exc:
            if _lease_token(target) == self.token:  # our own rename happened after all (NFS)
                self.finished = self.committed = True
                return target
            raise LeaseLost(f"{self.entry_id}: claim {self.path} is gone; discarding its work") from exc
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                return self.commit(duplicate_name(self.entry_id, self.token))
            raise SpoolIOError(f"{self.entry_id}: cannot commit: {exc.strerror}") from exc
        self.finished = self.committed = True
        return target

    def release(self, reason: str, *, counts: bool = False) -> bool:
        """Hands the entry back to incoming/. A hand-back on shutdown (`counts=False`, logged as
        "released") does not use up an attempt; one after a system failure does (logged as
        "failed"), or a submission that breaks the system every time would be retried forever.
        Returns False if the entry is no longer ours or incoming/<id> is taken; the lease then
        expires as usual."""
        event = "failed" if counts else "released"
        try:
            record = {"event": event, "token": self.token, "reason": reason, "at": iso(time.time())}
            append_line(self.log_path, record, beneath=self.dirs.active)
            os.unlink(self.lease)
            os.rename(self.path, self.dirs.incoming / self.entry_id)
            self.finished = True
        except (OSError, LeaseLost, SpoolIOError) as exc:
            log.warning("%s: could not hand back (%s); its lease will expire", self.entry_id, exc)
            return False
        return True


def _lease_token(entry: Path) -> str | None:
    try:
        return str(read_json(entry / LEASE, beneath=entry.parent).get("token"))
    except (OSError, ValueError, AttributeError):
        return None
