"""The filesystem's clock.

Leases and settle times are compared against mtimes that the *file server* stamps. Hosts' clocks
drift, and on NFS the server, not the client, sets mtimes. So "now" is read the same way: touch a
probe file in the spool and read its mtime back. `os.utime(path, None)` is used on purpose: with no
explicit times the NFS client asks the server to use its own time (SET_TO_SERVER_TIME).
"""

from __future__ import annotations

import os
import time
from pathlib import Path


class FsClock:
    def __init__(self, directory: Path, name: str) -> None:
        self._probe = directory / f".clock-{name}"

    def now(self) -> float:
        try:
            os.utime(self._probe, None)
        except FileNotFoundError:
            fd = os.open(self._probe, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            os.close(fd)
            os.utime(self._probe, None)
        # open() revalidates attributes on NFS (close-to-open); stat alone may be served from cache.
        fd = os.open(self._probe, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return os.fstat(fd).st_mtime
        finally:
            os.close(fd)

    def remove(self) -> None:
        try:
            os.unlink(self._probe)
        except FileNotFoundError:
            pass


class LocalClock:
    """For tests that drive time by hand: `now` is whatever they set."""

    def __init__(self, now: float | None = None) -> None:
        self.value = time.time() if now is None else now

    def now(self) -> float:
        return self.value
