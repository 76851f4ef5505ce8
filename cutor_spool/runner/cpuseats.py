"""Which CPU a pinned slot gets, decided for the whole host (spool.yaml `sandbox.pinning`).

Every executor of a host (and the invocations that share an executor's pool) takes its slots' CPUs
from one table, `cpus` in the host's lock directory, so that two executors never pile their slots
onto one CPU while another idles. The table holds no data: a slot on CPU `n` holds a *seat*, a
one-byte open-file-description lock (`F_OFD_SETLK`) at offset `n * SEATS + k` for some free `k`,
on a descriptor of its own that it keeps until it is released. The kernel drops the lock when
that descriptor is closed, so a worker that dies (SIGKILL, a crash) frees its seats with it, as
it frees its slots' uid locks; no stale count outlives its holder.

How many slots hold a CPU is the number of locked seats in its range, found with `F_OFD_GETLK`
(one call per seat held, plus one per gap: a handful on any real host). The choice is the rule
the pool always had, now over the whole host: the CPU the fewest slots hold; among those, the one
whose core's other hyperthreads hold the fewest (siblings share a core's execution units and
caches); then the lowest. Choosing and taking happen under an exclusive `flock` of the table, so
two executors choosing at once do not both see the same CPU free.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cutor_spool.errors import SandboxError

SEATS = 1 << 20  # seats per CPU in the table: more than slots can ever be (sandbox.slots <= 65536)
# struct flock on Linux x86_64 and aarch64: short l_type, short l_whence, off_t l_start, off_t
# l_len, pid_t l_pid, padded to 32 bytes. The OFD commands require l_pid 0.
_FLOCK = struct.Struct("hh4xqqi4x")


@dataclass(frozen=True)
class Seat:
    cpu: int
    fd: int  # holds the seat's lock; closing it frees the seat


class CpuSeats:
    def __init__(self, table: Path, cpus: tuple[int, ...], siblings: dict[int, frozenset[int]]) -> None:
        """`cpus`: the CPUs to hand out; `siblings`: each one's other hyperthreads."""
        self.table = table
        self.cpus = cpus
        self.siblings = siblings

    def take(self) -> Seat:
        with self._chosen() as fd:
            counts = self._counts(fd)
            cpu = min(self.cpus, key=lambda c: (counts[c], self._on_core(c, counts), c))
            mine = self._open()  # a descriptor of its own: the seat's lock lives as long as it
            try:
                for k in range(SEATS):
                    if _lock(mine, cpu * SEATS + k):
                        return Seat(cpu, mine)
            except BaseException:
                os.close(mine)
                raise
            os.close(mine)
            raise SandboxError(f"CPU {cpu} has no free seat in {self.table}")

    @staticmethod
    def release(seat: Seat) -> None:
        os.close(seat.fd)

    def holders(self) -> dict[int, int]:
        """CPU -> how many slots of this host hold it now (every executor's)."""
        fd = self._open()
        try:
            return self._counts(fd)
        finally:
            os.close(fd)

    def _on_core(self, cpu: int, counts: dict[int, int]) -> int:
        return sum(counts.get(other, 0) for other in self.siblings.get(cpu, ()))

    def _counts(self, fd: int) -> dict[int, int]:
        return {cpu: _held(fd, cpu * SEATS, SEATS) for cpu in self.cpus}

    def _open(self) -> int:
        try:
            return os.open(self.table, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise SandboxError(f"cannot open the CPU table {self.table}: {exc.strerror}") from exc

    @contextmanager
    def _chosen(self) -> Iterator[int]:
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)


def _lock(fd: int, offset: int) -> bool:
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0))
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise SandboxError(f"cannot take a CPU seat: {exc.strerror}") from exc
    return True


def _held(fd: int, start: int, length: int) -> int:
    """How many seats other descriptors lock in [start, start + length). F_OFD_GETLK names one
    conflicting lock, not necessarily the first: the range is split around it and both sides
    asked again."""
    if length <= 0:
        return 0
    query = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, start, length, 0)
    fields: tuple[int, int, int, int, int] = _FLOCK.unpack(fcntl.fcntl(fd, fcntl.F_OFD_GETLK, query))
    kind, _, found, size, _ = fields
    if kind == fcntl.F_UNLCK:
        return 0
    end = start + length
    found_end = end if size == 0 else min(end, found + size)
    found = max(found, start)
    return (found_end - found) + _held(fd, start, found - start) + _held(fd, found_end, end - found_end)
