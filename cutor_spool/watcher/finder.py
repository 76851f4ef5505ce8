"""The candidates a worker tries to claim, fed by full scans, inotify and settle timers.

Scans are amortised: a scan lists incoming/ once and its names are claimed from memory, so a
backlog of 10,000 entries costs one `scandir` per rescan, not one per claim. Several threads of one
worker share one Finder; several workers race on the renames, which is cheap and safe.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import deque
from pathlib import Path

from cutor_spool.watcher.notify import DirectoryWatch
from cutor_spool.watcher.queue import SpoolQueue

log = logging.getLogger(__name__)


class Finder:
    def __init__(self, queue: SpoolQueue, *, poll: bool, interval: float) -> None:
        self.queue = queue
        self.poll = poll
        self.interval = interval  # the rescan period (poll interval when polling)
        self._cond = threading.Condition()
        self._order: deque[str] = deque()
        self._members: set[str] = set()
        self._deferred: list[tuple[float, str]] = []
        self._stopping = False
        self._scan_now = False
        self._watch: DirectoryWatch | None = None
        self._scanner: threading.Thread | None = None
        self.scans = 0

    def start(self) -> None:
        if not self.poll:
            self._watch = DirectoryWatch(
                [self.queue.dirs.incoming], lambda _d, name: self.offer([name]), self.wake_scan
            )
            if not self._watch.start():
                self._watch = None
        self.rescan()
        self._scanner = threading.Thread(target=self._scan_loop, name="finder-scan", daemon=True)
        self._scanner.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._watch is not None:
            self._watch.stop()

    def _scan_loop(self) -> None:
        while self._sleep():
            try:
                self.rescan()
            except OSError as exc:
                log.warning("scan of %s failed: %s", self.queue.dirs.incoming, exc)

    def _sleep(self) -> bool:
        """Waits one interval (or until `wake_scan`); False once stopping."""
        with self._cond:
            if not self._stopping and not self._scan_now:
                self._cond.wait(self.interval)
            self._scan_now = False
            return not self._stopping

    def wake_scan(self) -> None:
        """Rescan at once (inotify lost events)."""
        with self._cond:
            self._scan_now = True
            self._cond.notify_all()

    def rescan(self) -> None:
        names = self.queue.scan_incoming()
        self.scans += 1
        self.offer(names)

    def offer(self, names: list[str]) -> None:
        fresh = [n for n in names if not n.startswith(".")]
        if not fresh:
            return
        with self._cond:
            for name in fresh:
                self._push(name)
            self._cond.notify(len(fresh))

    def _push(self, name: str) -> None:
        if name not in self._members:
            self._members.add(name)
            self._order.append(name)

    def defer(self, name: str, delay: float) -> None:
        """Offer `name` again after `delay` seconds (an entry that has not settled yet)."""
        with self._cond:
            heapq.heappush(self._deferred, (time.monotonic() + delay, name))
            self._cond.notify()

    def take(self, timeout: float) -> str | None:
        """The next candidate, or None after `timeout` seconds (or when stopping)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._stopping:
                now = time.monotonic()
                while self._deferred and self._deferred[0][0] <= now:
                    _, name = heapq.heappop(self._deferred)
                    self._push(name)
                if self._order:
                    name = self._order.popleft()
                    self._members.discard(name)
                    return name
                wait = deadline - now
                if self._deferred:
                    wait = min(wait, self._deferred[0][0] - now)
                if wait <= 0:
                    return None
                self._cond.wait(wait)
        return None

    @property
    def incoming(self) -> Path:
        return self.queue.dirs.incoming
