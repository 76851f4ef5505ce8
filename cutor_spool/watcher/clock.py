"""The filesystem's clock.

Leases and settle times are compared against mtimes that the *file server* stamps. Hosts' clocks
drift, and on NFS the server, not the client, sets mtimes. So "now" is read the same way: write to
a probe file in the spool and read its mtime back.

A write, not `utime(path, None)`: a write's mtime is always set by the kernel (on NFS, by the
server), whatever the process believes the time is, while `utime` goes through libc, where a
time-faking layer (libfaketime, a container's time namespace shim) replaces "now" with its own
idea of it. `stamp()` is the one way every lease heartbeat and clock probe touches a file.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from cutor_spool.errors import SpoolIOError


def stamp(path: Path, *, create: bool = False) -> float:
    """Rewrites the first byte of `path` in place (or creates it) so that the filesystem sets its
    mtime to the filesystem's now; returns that mtime. FileNotFoundError if it is gone."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    fd = os.open(path, flags, 0o644)
    try:
        first = os.pread(fd, 1, 0) or b"\n"
        os.pwrite(fd, first, 0)
        # fstat flushes the write first on NFS, so this is the server's mtime.
        return os.fstat(fd).st_mtime
    finally:
        os.close(fd)


class FsClock:
    """Reads the filesystem's "now". When the probe cannot be written (a full disk), it carries
    the last reading forward on the monotonic clock: right to within the drift since then, and
    far better than a host clock that may be minutes off."""

    def __init__(self, directory: Path, name: str) -> None:
        self._probe = directory / f".clock-{name}"
        self._offset: float | None = None

    def now(self) -> float:
        try:
            fs_now = stamp(self._probe, create=True)
        except OSError as exc:
            if self._offset is None:
                raise SpoolIOError(f"cannot read the spool's clock ({self._probe}): {exc.strerror}") from exc
            return time.monotonic() + self._offset
        self._offset = fs_now - time.monotonic()
        return fs_now

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
