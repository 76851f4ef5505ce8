"""A running stage's output so far, for `cutor-spool tail` and the live page.

While the compile or run stage of a submission runs, `result/live/<stage>.out` holds the last
`LIVE_CAP` bytes of its output (stdout and stderr interleaved, as kept), and `<stage>.json` says how
many bytes the stage has written in all (`bytes`), so that a follower prints only what is new. They
are rewritten every `INTERVAL` seconds by one thread of the process (for all its slots), never by
the supervisor's loop, so a stage that writes fast is not slowed by it, and a stage over before
the first tick writes no file at all; both go when the stage ends (its whole
output is then in `<stage>.json` of the result). Judged tests and checkers have none: a test is
over in milliseconds, before the writer's first tick.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import Protocol

from cutor_spool.atomic import make_dir, write_bytes, write_json
from cutor_spool.errors import CutorError

log = logging.getLogger(__name__)

LIVE_DIR = "live"
LIVE_CAP = 64 * 1024
INTERVAL = 0.5  # a live view is rewritten at most this often
TICK = 0.1  # the background writer's period (a status held back waits at most this: results.py)
LIVE_STAGES = frozenset({"compile", "run"})


class LiveOutput:
    """One stage's live view. No thread of its own: `start` registers it with the process's one
    writer thread (`_Writer`), which rewrites every registered view each `INTERVAL`; a stage over
    before the first tick (most are) costs a set insert and removal, no thread, no file."""

    def __init__(self, result: Path, anchor: Path, stage: str) -> None:
        self.dir = result / LIVE_DIR
        self.anchor = anchor
        self.stage = stage
        self._tail = bytearray()
        self._total = 0
        self._written = -1
        self._due = time.monotonic() + INTERVAL
        self._lock = threading.Lock()  # the buffer: feed() against write_now()
        self._files = threading.Lock()  # the files: write_now() against close()
        self._closed = False

    def start(self) -> LiveOutput:
        BACKGROUND.add(self)
        return self

    def feed(self, data: bytes) -> None:
        """Called from the supervisor's loop with each piece kept: a copy into memory, nothing else."""
        with self._lock:
            self._total += len(data)
            self._tail += data
            if len(self._tail) > 2 * LIVE_CAP:
                del self._tail[: len(self._tail) - LIVE_CAP]

    def write_now(self) -> None:
        now = time.monotonic()
        if now < self._due:
            return
        self._due = now + INTERVAL
        with self._files:
            if self._closed:
                return
            with self._lock:
                if self._total == self._written:
                    return
                tail, total = bytes(self._tail[-LIVE_CAP:]), self._total
            try:
                if self._written < 0:
                    make_dir(self.dir, beneath=self.anchor)
                write_bytes(self.dir / f"{self.stage}.out", tail, fsync=False, beneath=self.anchor)
                meta = {"stage": self.stage, "bytes": total, "tail": tail.decode("utf-8", "replace"), "at": time.time()}
                write_json(self.dir / f"{self.stage}.json", meta, fsync=False, beneath=self.anchor)
                self._written = total
            except CutorError:  # the claim is gone or the disk full: the stage itself goes on
                self._closed = True

    def close(self) -> None:
        BACKGROUND.discard(self)
        with self._files:
            self._closed = True
            if self._written < 0:
                return
            for name in (f"{self.stage}.out", f"{self.stage}.json"):
                with contextlib.suppress(OSError):
                    (self.dir / name).unlink()


class View(Protocol):
    def write_now(self) -> None: ...


class _Writer:
    """The process's one background writer thread, started with the first view, for every slot:
    live outputs, and statuses held back (results.Reporter)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._views: set[View] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, view: View) -> None:
        with self._lock:
            self._views.add(view)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="background-writer", daemon=True)
                self._thread.start()

    def discard(self, view: View) -> None:
        with self._lock:
            self._views.discard(view)

    def _loop(self) -> None:
        # Nothing may end this thread: statuses held back would never be written. A failure is
        # logged once per kind and the next tick tries again. The tick waits on an Event, as the
        # heartbeat does, not with time.sleep: under libfaketime (tests/test_clock_skew.py) a
        # sleep's absolute deadline is shifted by the fake offset, and a 0.1 s tick lasted minutes.
        failed: set[str] = set()
        tick = threading.Event()
        while True:
            try:
                tick.wait(self.interval)
                with self._lock:
                    views = list(self._views)
                for view in views:
                    view.write_now()
            except Exception as exc:  # see above
                if type(exc).__name__ not in failed:
                    failed.add(type(exc).__name__)
                    log.exception("the background writer's tick failed; it carries on")


BACKGROUND = _Writer(TICK)
