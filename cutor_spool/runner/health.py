"""Whether this host can run stages at all: the executor's circuit breaker.

A stage whose sandbox cannot start is a system failure: the submission is handed back with the
attempt counted and ends `error` past `max_attempts` (DESIGN section 2), so that a submission
which breaks its own sandbox cannot poison the queue. But when the *host* is broken (bubblewrap
or the Docker engine gone, the state directory out of the slot uids' reach, a cgroup hierarchy
unmounted), every claim fails the same way, and an executor would burn the whole queue to `error`
within seconds while healthy hosts could have run it.

So a sandbox failure is followed by a probe: a trivial stage (`true`) with no submission content,
in a fresh sandbox. If the probe starts, the failure was the submission's: it counts as usual. If
the probe fails too, the host is at fault: the submission goes back uncounted, and this executor
claims nothing until a probe passes again, first after `FIRST_DELAY` seconds, then doubling up
to `MAX_DELAY`. Its heartbeat says so (`sandbox`), and so does the status page.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

FIRST_DELAY = 5.0
MAX_DELAY = 300.0

Probe = Callable[[], "str | None"]  # None: a stage ran; else why not


class SandboxHealth:
    def __init__(
        self,
        probe: Probe,
        on_change: Callable[[str | None], None],
        *,
        first_delay: float = FIRST_DELAY,
        max_delay: float = MAX_DELAY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probe = probe
        self._on_change = on_change  # the heartbeat's `sandbox` field: None when healthy
        self.first_delay, self.max_delay = first_delay, max_delay
        self._clock = clock
        self._lock = threading.Lock()  # one probe at a time
        self._delay = 0.0
        self.broken: str | None = None  # why, while broken
        self.retry_at = 0.0

    def host_is_at_fault(self) -> bool:
        """After a sandbox failure: True (and claiming paused) if a probe fails too."""
        with self._lock:
            if self.broken is not None:
                return True  # another slot found it broken meanwhile
            reason = self._run_probe()
            if reason is None:
                return False
            self._delay = self.first_delay
            self._set_broken(reason)
            return True

    def may_claim(self, stopping: threading.Event) -> bool:
        """For the work loop, before it takes a name: True when healthy. While broken, waits a
        little (at most 0.5 s, or until `stopping`) and returns False, probing again when due."""
        if self.broken is None:
            return True
        remaining = self.retry_at - self._clock()
        if remaining > 0:
            stopping.wait(min(0.5, remaining))
            return False
        if not self._lock.acquire(blocking=False):  # another thread is probing
            stopping.wait(0.5)
            return False
        try:
            if not self.is_broken():  # another thread's probe passed meanwhile
                return True
            if self._clock() < self.retry_at:
                return False
            reason = self._run_probe()
            if reason is None:
                log.warning("the sandbox works again; claiming resumes")
                self.broken, self._delay = None, 0.0
                self._on_change(None)
                return True
            self._delay = min(self.max_delay, self._delay * 2)
            self._set_broken(reason)
            return False
        finally:
            self._lock.release()

    def is_broken(self) -> bool:
        return self.broken is not None

    def _run_probe(self) -> str | None:
        try:
            return self._probe()
        except Exception as exc:  # a probe that cannot even be tried is a failed probe
            return f"the probe failed: {type(exc).__name__}: {exc}"

    def _set_broken(self, reason: str) -> None:
        self.broken = reason
        self.retry_at = self._clock() + self._delay
        log.error("this host cannot run stages (%s): claiming paused; a probe retries in %.0f s", reason, self._delay)
        self._on_change(f"broken, claiming paused: {reason}")
