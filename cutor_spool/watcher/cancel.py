"""Why a claim's work must stop: set by the lease heartbeat (lease lost) or by a shutdown, checked
by whatever runs the claim's work between its steps."""

from __future__ import annotations

import threading

from cutor_spool.errors import LeaseLost, Shutdown


class Cancelled:
    """Why a claim's work must stop; set by the lease heartbeat or by a shutdown."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""

    def set(self, reason: str) -> None:
        self.reason = self.reason or reason
        self.event.set()

    def check(self) -> None:
        if self.event.is_set():
            if self.reason == "shutdown":
                raise Shutdown()
            raise LeaseLost(self.reason)
