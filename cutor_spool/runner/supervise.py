"""The one supervisor of every child a worker runs: stages of both backends, checkers, Nix builds.

A child is watched in one loop: its output streams are read into a byte-capped `Capture`, its
limits (the wall deadline, CPU of its whole cgroup, cancellation) are checked between reads, and
its end is noticed through a pidfd. What stops it is named by one `KillReason`, which
`stage.classify` turns, with what the cgroup counted, into one status for stages and builds alike.

The end of the *main* process ends the child: what it left behind (a daemon holding stdout) is
killed and the streams are drained for at most DRAIN seconds. With bubblewrap that changes
nothing (its pid 1 takes the sandbox down with it); a Docker exec's stream stays open while
anything holds the stage's stdout; Nix may leave a builder behind.

A child is a `Child` (a subprocess: `ProcessChild`; a Docker exec: `docker_exec.ExecChild`) and
its streams are `Source`s (a pipe: `PipeSource`; the engine's multiplexed socket:
`docker_exec.FrameSource`), so the Docker backend's different I/O goes through the same loop.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from cutor_spool.limits import Limits
from cutor_spool.runner.capture import Capture
from cutor_spool.runner.cgroups import Cgroup

log = logging.getLogger(__name__)

CPU_POLL = 0.02  # seconds between reads of the cgroup's CPU counter while a child runs
IDLE_POLL = 0.1  # between checks of the deadline and cancellation when no CPU is watched
DRAIN = 2.0  # after the main process ended and its leftovers were killed: the rest of the output
CHUNK = 262144


class KillReason(StrEnum):
    """Why the supervisor stopped a child (the same words for stages and builds)."""

    OUTPUT = "output"  # a stream went past its cap
    CPU = "cpu"  # CPU time of all its processes went past the limit
    WALL = "wall"  # the wall-clock deadline passed
    CANCEL = "cancel"  # the worker lost its lease or is shutting down, or the caller killed it


Piece = tuple[str, bytes]  # (stream name, bytes): "stdout", "stderr", or a side channel


@dataclass
class LimitWatch:
    """The limits checked between reads. `deadline` is monotonic; `cpu` the cgroup whose CPU
    counter (minus `cpu_offset`, for a cgroup shared between stages) must stay within `cpu_limit`."""

    deadline: float | None
    cancel: threading.Event | None
    cpu: Cgroup | None = None
    cpu_limit: float = math.inf
    cpu_offset: float = 0.0
    killed: threading.Event = field(default_factory=threading.Event)  # kill() of a spawned stage

    @classmethod
    def stage(
        cls, limits: Limits, cpu: Cgroup | None, cancel: threading.Event | None, started: float, cpu_offset: float = 0.0
    ) -> LimitWatch:
        return cls(started + limits.wall_time, cancel, cpu, limits.cpu_time, cpu_offset)

    def cpu_used(self) -> float:
        return self.cpu.cpu_seconds() - self.cpu_offset if self.cpu is not None else 0.0

    def check(self) -> KillReason | None:
        if self.killed.is_set() or (self.cancel is not None and self.cancel.is_set()):
            return KillReason.CANCEL
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return KillReason.WALL
        if self.cpu is not None and self.cpu_used() > self.cpu_limit:
            return KillReason.CPU
        return None

    def next_wait(self) -> float:
        wait = CPU_POLL if self.cpu is not None else IDLE_POLL
        if self.deadline is None:
            return wait
        return max(0.0, min(wait, self.deadline - time.monotonic()))


class Watch(Protocol):
    def check(self) -> KillReason | None: ...

    def next_wait(self) -> float: ...


class Source(Protocol):
    """One readable stream of a child."""

    def fileno(self) -> int: ...

    def read(self) -> list[Piece] | None:
        """What could be read now (possibly nothing); None once the stream has ended."""
        ...

    def close(self) -> None: ...


@dataclass
class PipeSource:
    fd: int
    name: str

    def fileno(self) -> int:
        return self.fd

    def read(self) -> list[Piece] | None:
        data = os.read(self.fd, CHUNK)
        return [(self.name, data)] if data else None

    def close(self) -> None:
        os.close(self.fd)


class Child(Protocol):
    """The main process of what is supervised, and how to end it."""

    def exit_fd(self) -> int | None:
        """An fd that turns readable when the main process ends (a pidfd), once one is known."""
        ...

    def exited(self, now: float, quiet: bool) -> bool:
        """Whether the main process has ended. `quiet`: no stream is open any more."""
        ...

    def stop(self) -> None:
        """Kills it all, now; returns once the main process is over."""
        ...

    def sweep(self) -> None:
        """The main process ended: kills whatever it left behind."""
        ...

    def close(self) -> None:
        """Lets go of the exit fd."""
        ...


@dataclass
class ProcessChild:
    """A subprocess started in its own session, in `cgroup` if it has one. `spare` names a pid
    to leave alive at first when stopping it (bubblewrap's monitor, see `Cgroup.kill`)."""

    proc: subprocess.Popen[bytes]
    cgroup: Cgroup | None
    spare: Callable[[], int | None] = lambda: None
    _pidfd: int | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._pidfd = os.pidfd_open(self.proc.pid)

    def exit_fd(self) -> int | None:
        return self._pidfd

    def exited(self, now: float, quiet: bool) -> bool:
        return self.proc.poll() is not None

    def stop(self) -> None:
        if self.cgroup is not None:
            self.cgroup.kill(spare=self.spare())
        else:
            self._killpg()
        try:
            self.proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            self.sweep()
            self.proc.wait()

    def sweep(self) -> None:
        if self.cgroup is not None:
            self.cgroup.kill()
        if self.proc.returncode is None:  # the group may outlive its leader; its pid is ours until reaped
            self._killpg()

    def _killpg(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


@dataclass
class Supervisor:
    """Runs the one loop for a child: see the module's docstring."""

    child: Child
    sources: list[Source]
    capture: Capture
    watch: Watch
    label: str = ""
    drain: float = DRAIN
    reason: KillReason | None = None
    _exit_fd: int | None = None

    def feed(self, pieces: Iterable[Piece]) -> None:
        for stream, data in pieces:
            if not self.capture.feed(stream, data) and self.reason is None:
                self.reason = KillReason.OUTPUT

    def run(self, early: Iterable[Piece] = ()) -> KillReason | None:
        """Watches until the child is over or must be stopped; leaves all of it dead."""
        sel = selectors.DefaultSelector()
        for source in self.sources:
            sel.register(source, selectors.EVENT_READ, source)
        self.feed(early)
        try:
            self._loop(sel)
        except BaseException:
            with contextlib.suppress(Exception):  # the error that got us here is the one to report
                self.child.stop()
            raise
        finally:
            sel.close()
            for source in self.sources:
                source.close()
            self.child.close()
        return self.reason

    def _loop(self, sel: selectors.BaseSelector) -> None:
        drain_until: float | None = None
        quiet_polls = 0
        while True:
            if drain_until is None:
                self._watch_exit(sel)
            if drain_until is None:
                wait = self.watch.next_wait()
            else:
                wait = max(0.0, min(IDLE_POLL, drain_until - time.monotonic()))
            if sel.get_map():
                self._read(sel, sel.select(wait))
            else:  # nothing to wait on yet (a Docker exec whose stream ended): ask again soon
                time.sleep(min(wait, 0.001 * 2**quiet_polls))
                quiet_polls = min(quiet_polls + 1, 5)
            if self.reason is not None:
                self.child.stop()
                return
            now = time.monotonic()
            streams_open = any(key.data is not None for key in sel.get_map().values())
            if drain_until is None and self.child.exited(now, quiet=not streams_open):
                self._forget_exit(sel)
                self.child.sweep()  # what the main process left behind dies with it
                drain_until = now + self.drain
            if drain_until is not None:
                if not streams_open:
                    return
                if now > drain_until:
                    log.warning("%s: its output stayed open after its main process ended", self.label)
                    return
                continue
            self.reason = self.watch.check()

    def _read(self, sel: selectors.BaseSelector, events: list[tuple[selectors.SelectorKey, int]]) -> None:
        for key, _ in events:
            source = key.data
            if source is None:  # the exit fd: `exited` says the rest
                continue
            pieces = source.read()
            if pieces is None:
                sel.unregister(source)
            else:
                self.feed(pieces)

    def _watch_exit(self, sel: selectors.BaseSelector) -> None:
        if self._exit_fd is None:
            fd = self.child.exit_fd()
            if fd is not None:
                sel.register(fd, selectors.EVENT_READ, None)
                self._exit_fd = fd

    def _forget_exit(self, sel: selectors.BaseSelector) -> None:
        if self._exit_fd is not None:
            sel.unregister(self._exit_fd)
