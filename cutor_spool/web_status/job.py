"""How workers keep the page fresh: a `Maintenance.periodic` job, throttled, in the background.

- Throttled across the whole spool, not per worker: `status/status.json` is written last by every
  regeneration, so its mtime (against the filesystem's clock) says when *anyone* last regenerated;
  with ten workers the page is still regenerated about once per `status_page.interval`, not ten
  times. Two workers that decide at the same moment both regenerate, which is harmless (see
  `index.py`).
- In the background: the maintenance thread also touches leases, and a regeneration (a cold one
  over a large spool takes seconds) must never delay a heartbeat into a lost lease. The job starts
  a thread and returns; while that thread runs, later ticks skip. The thread runs at a lower CPU
  priority than the worker's own threads.
- It never takes the worker down: any failure is logged and retried at the next interval.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from cutor_spool.config import StatusPageConfig
from cutor_spool.layout import SpoolPaths
from cutor_spool.web_status.generate import regenerate

log = logging.getLogger(__name__)

NICENESS = 10


class StatusPageJob:
    def __init__(
        self, paths: SpoolPaths, config: StatusPageConfig, now: Callable[[], float], *, generator: str
    ) -> None:
        self.paths, self.config, self.now, self.generator = paths, config, now, generator
        self._thread: threading.Thread | None = None
        self._last = float("-inf")
        self.runs = 0

    def __call__(self) -> None:
        if not self.config.enabled:
            return
        if self._thread is not None and self._thread.is_alive():
            return
        moment = time.monotonic()
        if moment - self._last < self.config.interval:
            return
        self._last = moment
        if self._fresh():
            return
        self._thread = threading.Thread(target=self._run, name="status-page", daemon=True)
        self._thread.start()

    def _fresh(self) -> bool:
        """Did any worker regenerate the page within the interval?"""
        try:
            written = os.stat(self.paths.status / "status.json").st_mtime
        except OSError:
            return False
        return 0 <= self.now() - written < self.config.interval

    def _run(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICENESS)  # this thread only
        except OSError:
            pass
        try:
            report = regenerate(self.paths, self.config, now=self.now, generator=self.generator)
            self.runs += 1
            if report.rendered or report.removed:
                log.info(
                    "status page: %d new or changed result(s), %d removed, in %.3fs",
                    report.rendered,
                    report.removed,
                    report.seconds,
                )
        except Exception:  # the page must never take a worker down
            log.exception("status page: regeneration failed; trying again in %ss", self.config.interval)

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
