"""Pilot workers: a worker that a batch engine (Slurm, a Kubernetes Job) starts as a job and that
ends on its own, with exit status 0, once it has nothing to do (`--exit-when-idle`) or has done
its share (`--max-jobs`).

One `Pilot` serves the whole process: the executor and its companion (the invocations queue)
count their claims together and are idle together. It never interrupts work: it only stops the
claiming of more, and says when the process may stop, which is when nothing runs. The worker
then stops as on SIGTERM, with nothing left to hand back.

    idle       nothing claimed and nothing running for `exit_when_idle` seconds (a claim, by any
               queue of the process, starts the countdown afresh once it ends)
    max_jobs   claims taken by this process; after the Nth it claims no more, lets what runs
               finish, and stops (a claim lost to another worker before it was ours does not count)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Pilot:
    """Counts this process's claims and tells when a pilot's work is over. Without limits (the
    default) it never stops anything."""

    def __init__(
        self,
        *,
        exit_when_idle: float | None = None,
        max_jobs: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.exit_when_idle = exit_when_idle
        self.max_jobs = max_jobs
        self._clock = clock
        self._lock = threading.Lock()
        self.taken = 0  # claims reserved or taken by this process (a lost race gives its back)
        self.running = 0  # of those, not finished yet
        self._idle_since = clock()
        self._over = False  # `finished` said so: no claim after that

    def configure(self, *, exit_when_idle: float | None, max_jobs: int | None) -> None:
        """Sets the limits (the command line's `--exit-when-idle`, `--max-jobs`) before `run`."""
        if max_jobs is not None and max_jobs < 1:
            raise ValueError("max_jobs must be at least 1")
        with self._lock:
            self.exit_when_idle, self.max_jobs = exit_when_idle, max_jobs
            self._idle_since = self._clock()

    @property
    def limited(self) -> bool:
        return self.exit_when_idle is not None or self.max_jobs is not None

    def reserve(self) -> bool:
        """Before a claim: True and counted, or False once `max_jobs` claims are taken."""
        with self._lock:
            if self._over or (self.max_jobs is not None and self.taken >= self.max_jobs):
                return False
            self.taken += 1
            self.running += 1
            return True

    def settle(self, claimed: bool) -> None:
        """After the claim's work (or a claim that another worker won: `claimed` False)."""
        with self._lock:
            self.running -= 1
            if not claimed:
                self.taken -= 1
            elif self.running == 0:
                self._idle_since = self._clock()

    def closed(self) -> bool:
        """True once this process claims no more (its `max_jobs` are taken)."""
        with self._lock:
            return self._over or (self.max_jobs is not None and self.taken >= self.max_jobs)

    def finished(self) -> str | None:
        """Why this pilot's work is over (nothing runs, and it is idle or has done its jobs), or
        None while it is not. Once it has said why, `reserve` refuses every claim: a claim is
        either counted as running before this decision or never made."""
        with self._lock:
            reason = None if self.running else self._reason()
            self._over = self._over or reason is not None
            return reason

    def _reason(self) -> str | None:
        if self.max_jobs is not None and self.taken >= self.max_jobs:
            return f"did its {self.max_jobs} job(s) (--max-jobs)"
        if self.exit_when_idle is not None:
            idle = self._clock() - self._idle_since
            if idle >= self.exit_when_idle:
                return f"idle for {idle:.1f}s (--exit-when-idle)"
        return None
