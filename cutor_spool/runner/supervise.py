"""Watching a running stage: CPU of the whole cgroup, the wall clock, cancellation.

Shared by both backends so that a limit means the same thing whichever runs the stage.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from cutor_spool.limits import Limits
from cutor_spool.runner.cgroups import Cgroup

CPU_POLL = 0.02  # seconds between reads of the cgroup's CPU counter while a stage runs


@dataclass
class LimitWatch:
    limits: Limits
    cpu: Cgroup | None  # where CPU is read (None: the backend reads it some other way)
    cancel: threading.Event | None
    started: float
    cpu_offset: float = 0.0  # for a shared cgroup (Docker): the counter's value at the start

    @property
    def deadline(self) -> float:
        return self.started + self.limits.wall_time

    def check(self) -> str | None:
        """Why the stage must be stopped now ("wall", "cpu", "cancel"), or None."""
        if self.cancel is not None and self.cancel.is_set():
            return "cancel"
        if time.monotonic() >= self.deadline:
            return "wall"
        if self.cpu is not None and self.cpu.cpu_seconds() - self.cpu_offset > self.limits.cpu_time:
            return "cpu"
        return None

    def next_wait(self) -> float:
        return max(0.0, min(CPU_POLL, self.deadline - time.monotonic()))
