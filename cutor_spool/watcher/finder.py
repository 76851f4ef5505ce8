"""The candidates a worker tries to claim, fed by full scans, inotify and settle timers.

Scans are amortised: a scan lists incoming/ once and its names are claimed from memory, so a
backlog of 10,000 entries costs one `scandir` per rescan, not one per claim. Several threads of one
worker share one Finder; several workers race on the renames, which is cheap and safe.

Candidates wait in priority lanes (priority.py): `take` gives the highest lane's oldest, with the
anti-starvation rule described there. A worker without lanes has one: FIFO, as before.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from cutor_spool.watcher.notify import DirectoryWatch
from cutor_spool.watcher.priority import FAIR_EVERY
from cutor_spool.watcher.queue import SpoolQueue

log = logging.getLogger(__name__)


class Finder:
    def __init__(
        self, queue: SpoolQueue, *, poll: bool, interval: float, priority: Callable[[str], int] | None = None
    ) -> None:
        self.queue = queue
        self.poll = poll
        self.interval = interval  # the rescan period (poll interval when polling)
        self._priority = priority  # an entry name's lane (read outside the lock: it may open a file)
        self._cond = threading.Condition()
        self._lanes: dict[int, deque[tuple[float, str]]] = {}  # lane -> (offered at, name), oldest first
        self._known: dict[str, int] = {}  # lanes of names seen, while they are in incoming/
        self._passed_over = 0  # claims in a row that passed over a non-empty lower lane
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
        if self._priority is not None:
            present = set(names)
            with self._cond:  # forget the lanes of entries no longer queued (claimed, removed)
                self._known = {n: lane for n, lane in self._known.items() if n in present}
        self.offer(names)

    def offer(self, names: list[str]) -> None:
        fresh = [n for n in names if not n.startswith(".")]
        if not fresh:
            return
        if self._priority is not None:
            with self._cond:
                unknown = [n for n in fresh if n not in self._members and n not in self._known]
            lanes = {n: self._priority(n) for n in unknown}
        with self._cond:
            if self._priority is not None:
                self._known.update(lanes)
            for name in fresh:
                self._push(name)
            self._cond.notify(len(fresh))

    def _push(self, name: str) -> None:
        if name not in self._members:
            self._members.add(name)
            lane = self._known.get(name, 0)
            self._lanes.setdefault(lane, deque()).append((time.monotonic(), name))

    def _pop(self) -> str | None:
        """The highest lane's oldest; after FAIR_EVERY claims that passed over a lower lane, the
        oldest of all (priority.py)."""
        lanes = sorted((lane for lane, queue in self._lanes.items() if queue), reverse=True)
        if not lanes:
            return None
        lane = lanes[0]
        if len(lanes) > 1:
            if self._passed_over >= FAIR_EVERY:
                lane = min(lanes, key=lambda n: self._lanes[n][0][0])
                self._passed_over = 0
            else:
                self._passed_over += 1
        else:
            self._passed_over = 0
        _, name = self._lanes[lane].popleft()
        self._members.discard(name)  # its lane stays known: a deferred entry comes back to it
        return name

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
                    _, due = heapq.heappop(self._deferred)
                    self._push(due)
                taken = self._pop()
                if taken is not None:
                    return taken
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
