"""The gateway's queue policy (docs/gateway.md, "Waiting, progress and overload").

- **No progress, not slowness, is the 503.** An invocation waiting in `invocations/incoming/` is
  given up (withdrawn, 503 "no executor took it") only when the queue has not moved for the claim
  timeout: a queue moves when an executor claims an entry or ends one, and both rename a name into
  or out of `invocations/active/`, which changes that directory's mtime. So a backlog that
  executors are working through waits (up to `queue_timeout`, the invocation's own bound in the
  queue), and a spool with no executor, or with executors that are all stuck, answers 503 after
  the claim timeout as before. `QueueProgress` keeps when the queue last moved: the inotify
  watch's names in active/ tell it at once, a look at active/'s mtime (one stat, at most every
  `look_every` seconds, shared by every waiter) tells it on NFS and after an overflow.
- **Admission**: above `max_queue` entries waiting in `incoming/` (0: no limit, the default) a new
  invocation is refused before anything is written: 503 with Retry-After. It is the bound a
  serious deployment sets for real overload (arrivals above what its executors can ever serve:
  the queue and the waits would grow without end); the count is one directory listing, shared by
  the requests of `look_every` seconds, and made afresh for each request once near the limit.
"""

from __future__ import annotations

import os
import time

from anyio import to_thread

from cutor_spool.gateway.answers import RETRY_AFTER, Answer, error_answer
from cutor_spool.layout import SpoolPaths

LOOK_EVERY = 0.2  # seconds between two looks at the queue's directories (shared by all requests)


def _mtime_ns(path: os.PathLike[str]) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return 0


def _count(path: os.PathLike[str]) -> int:
    try:
        with os.scandir(path) as names:
            return sum(1 for _ in names)
    except FileNotFoundError:
        return 0


class QueueProgress:
    """When the invocation queue last moved (time.monotonic)."""

    def __init__(self, paths: SpoolPaths, look_every: float = LOOK_EVERY) -> None:
        self.active = paths.invocations.active
        self.look_every = look_every
        self._mark: int | None = None
        self._moved = time.monotonic()
        self._looked = float("-inf")

    def moved(self) -> None:
        """The inotify hint: a name came into active/ (a claim, or a lease renewed)."""
        self._moved = time.monotonic()

    async def moved_at(self) -> float:
        now = time.monotonic()
        if now - self._looked >= self.look_every:
            self._looked = now
            mark = await to_thread.run_sync(_mtime_ns, self.active)
            if mark != self._mark:
                if self._mark is not None:
                    self._moved = max(self._moved, time.monotonic())
                self._mark = mark
        return self._moved


class Admission:
    """Refuses a new invocation while `max_queue` (> 0) entries wait unclaimed."""

    def __init__(self, paths: SpoolPaths, max_queue: int, look_every: float = LOOK_EVERY) -> None:
        self.incoming = paths.invocations.incoming
        self.max_queue = max_queue
        self.look_every = look_every
        self._depth = 0
        self._looked = float("-inf")

    async def refusal(self) -> Answer | None:
        if self.max_queue <= 0:
            return None
        now = time.monotonic()
        if now - self._looked >= self.look_every or self._depth + 1 >= self.max_queue:  # near it: look
            self._looked = now
            self._depth = await to_thread.run_sync(_count, self.incoming)
        if self._depth < self.max_queue:
            self._depth += 1  # this request's entry, until the next look counts it
            return None
        message = (
            f"the spool's queue is full ({self._depth} invocations wait, the limit is {self.max_queue}); retry later"
        )
        return error_answer(503, message, None, [("Retry-After", RETRY_AFTER)])
