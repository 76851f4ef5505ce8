"""Waiting for many invocations at once without a thread or an inotify instance each.

One `DirectoryWatch` (inotify, the hint) on `invocations/active/` and `invocations/done/` wakes
the waiters whose entry id a new name carries (`<id>.<token>` in active/, `<id>` in done/); a
timer wakes every waiter each `rescan` seconds (the truth: inotify sees nothing another NFS
client did, and can overflow), and on a spool that needs polling the timer is all there is. A
woken waiter looks at its own entry (one stat or one small read, in a worker thread: the event
loop never touches the filesystem), so the cost per tick is one look per request in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cutor_spool.gateway.admission import QueueProgress
from cutor_spool.layout import SpoolPaths
from cutor_spool.watcher.notify import DirectoryWatch, needs_polling

log = logging.getLogger(__name__)

RESCAN_INOTIFY = 1.0  # seconds between looks when inotify tells us of changes
RESCAN_POLLING = 0.2  # seconds between looks on a spool that needs polling (NFS)


class SharedWaiter:
    def __init__(self, paths: SpoolPaths, *, poll: bool | None = None) -> None:
        self.paths = paths
        self.poll = needs_polling(paths.root) if poll is None else poll
        self.rescan = RESCAN_POLLING if self.poll else RESCAN_INOTIFY
        self._events: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watch: DirectoryWatch | None = None
        self.progress = QueueProgress(paths)  # when the queue last moved (a claim or an ending)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if not self.poll:
            queue = self.paths.invocations
            self._watch = DirectoryWatch([queue.active, queue.done], self._on_name, self._on_overflow)
            if not self._watch.start():
                self._watch = None
                self.rescan = RESCAN_POLLING

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.stop()
            self._watch = None

    @property
    def waiting(self) -> int:
        return sum(len(events) for events in self._events.values())

    def _on_name(self, directory: Path, name: str) -> None:  # the inotify thread
        if self._loop is not None:
            if directory == self.paths.invocations.active:
                self._loop.call_soon_threadsafe(self.progress.moved)
            self._loop.call_soon_threadsafe(self._wake, name.partition(".")[0])

    def _on_overflow(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake_all)

    def _wake(self, entry_id: str) -> None:
        for event in self._events.get(entry_id, ()):
            event.set()

    def _wake_all(self) -> None:
        for events in self._events.values():
            for event in events:
                event.set()

    @contextmanager
    def watching(self, entry_id: str) -> Iterator[asyncio.Event]:
        """An event set when something happened to `entry_id` (or may have: a rescan is due)."""
        event = asyncio.Event()
        self._events[entry_id].add(event)
        try:
            yield event
        finally:
            events = self._events.get(entry_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._events[entry_id]

    async def pause(self, event: asyncio.Event, timeout: float) -> None:
        """Until the event is set or the next rescan is due (at most `timeout`)."""
        try:
            await asyncio.wait_for(event.wait(), max(0.0, min(timeout, self.rescan)))
        except TimeoutError:
            pass
        event.clear()
