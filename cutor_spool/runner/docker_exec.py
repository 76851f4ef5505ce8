"""One Docker exec as the supervisor sees it: its stream, its main process, its limits.

The exec's output is no pipe but the engine's socket, stdout and stderr multiplexed in frames
(`docker_stream`): `FrameSource` is that socket as one more `supervise.Source`, so the exec is
watched by the same loop as every other child (`supervise.Supervisor`).

An exec is over when its main process exits, not when its output stream closes: the engine keeps
the stream open while anything holds the stage's stdout (a background child), and then gives up
only two seconds later. So, like the bubblewrap backend (whose pid 1 takes the pid namespace down
with it), the end of the main process ends the stage: what it left behind is killed and the
stream drained (the supervisor's DRAIN). The main process is known by its host pid (from the
engine, once it has started) through a pidfd; before that, the engine is asked about it every
INSPECT_POLL.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from cutor_spool.errors import SandboxError
from cutor_spool.runner.capture import Capture
from cutor_spool.runner.docker_cgroup import ContainerCgroup, Process
from cutor_spool.runner.docker_stream import FrameReader
from cutor_spool.runner.supervise import CHUNK, KillReason, LimitWatch, Piece, Supervisor

INSPECT_POLL = 0.1  # seconds between questions to the engine until the main process is known
EXIT_WAIT = 10.0  # for the engine to record the exit code of an exec that is over


class ExecApi(Protocol):
    def exec_inspect(self, exec_id: str) -> dict[str, Any]: ...


@dataclass
class FrameSource:
    """The exec's socket: its frames as (stream, bytes) pieces; the engine's own messages are
    the side stream "engine"."""

    sock: socket.socket
    reader: FrameReader = field(default_factory=FrameReader)

    def fileno(self) -> int:
        return self.sock.fileno()

    def decode(self, data: bytes) -> list[Piece]:
        return list(self.reader.feed(data))

    def read(self) -> list[Piece] | None:
        try:
            data = self.sock.recv(CHUNK)
        except BlockingIOError:
            return []
        return self.decode(data) if data else None

    def close(self) -> None:
        pass  # the socket is the caller's


@dataclass
class ExecChild:
    """The exec's main process (see the module's docstring) and how to end the stage."""

    api: ExecApi
    exec_id: str
    cgroup: ContainerCgroup
    started: float
    ended: float | None = None  # when the main process was seen to end
    container_lost: bool = False
    recorded: int | None = None  # the exit code, when the engine gave it while we watched
    pidfd: int | None = None
    _next_inspect: float = 0.0

    def __post_init__(self) -> None:
        self._next_inspect = self.started + INSPECT_POLL

    def exit_fd(self) -> int | None:
        return self.pidfd

    def exited(self, now: float, quiet: bool) -> bool:
        if self.ended is None and self._main_done(now, quiet):
            self.ended = now
        return self.ended is not None

    def _main_done(self, now: float, quiet: bool) -> bool:
        if self.pidfd is not None:
            return bool(select.select([self.pidfd], [], [], 0)[0])
        if not quiet and now < self._next_inspect:
            return False
        self._next_inspect = now + INSPECT_POLL
        info = self.api.exec_inspect(self.exec_id)
        if info.get("ExitCode") is not None and not info.get("Running"):
            self.recorded = int(info["ExitCode"])
            return True
        if info.get("Pid"):
            self.pidfd = self._open_main(int(info["Pid"]))
        return False

    def _open_main(self, pid: int) -> int | None:
        """A pidfd for the exec's main process, if `pid` still is it: a member of the container
        whose parent is outside it (the runtime's shim), not a later process that reused the pid."""
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return None  # already gone: the next question to the engine says how it ended
        try:
            members = set(self.cgroup.cgroup.pids())
            process = Process.of(pid)
            if process is None or pid not in members or process.parent() in members:
                os.close(fd)
                return None
        except (OSError, ValueError):
            os.close(fd)
            return None
        return fd

    def stop(self) -> None:
        self.sweep()

    def sweep(self) -> None:
        try:
            self.cgroup.kill_stage()
        except FileNotFoundError:
            self.container_lost = True

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    def exit_code(self) -> int | None:
        """The exec's exit code once the engine has recorded it (processes still starting when the
        stage was stopped are killed as they appear)."""
        if self.recorded is not None:
            return self.recorded
        deadline = time.monotonic() + EXIT_WAIT
        while True:
            info = self.api.exec_inspect(self.exec_id)
            if info.get("ExitCode") is not None and not info.get("Running"):
                return int(info["ExitCode"])
            if time.monotonic() > deadline:
                raise SandboxError(f"exec {self.exec_id[:12]}: the engine did not record its end")
            with contextlib.suppress(SandboxError):
                self.sweep()
            time.sleep(0.005)


@dataclass
class ContainerWatch:
    """The stage's limits on the container's cgroup, which the stage can take down with it (by
    killing the keeper): then there is nothing left to watch but the clock."""

    watch: LimitWatch
    child: ExecChild
    cpu_seen: float = 0.0  # the last CPU reading, in case the container's cgroup disappears

    def check(self) -> KillReason | None:
        try:
            reason = self.watch.check()
            self.cpu_seen = self.watch.cpu_used()
            self.child.cgroup.sample()
        except FileNotFoundError:
            self.child.container_lost = True
            self.watch.cpu = None
            return self.watch.check()
        return reason

    def next_wait(self) -> float:
        return self.watch.next_wait()


def watch_exec(
    api: ExecApi, exec_id: str, cgroup: ContainerCgroup, watch: LimitWatch, capture: Capture, sock: socket.socket,
    early: bytes, *, started: float, label: str,
) -> tuple[ExecChild, ContainerWatch, KillReason | None]:  # fmt: skip
    """Supervises an exec until it is over or must be stopped; leaves the stage's processes dead."""
    child = ExecChild(api, exec_id, cgroup, started)
    limits = ContainerWatch(watch, child)
    source = FrameSource(sock)
    supervisor = Supervisor(child, [source], capture, limits, label=f"{label}: exec {exec_id[:12]}")
    reason = supervisor.run(early=source.decode(early))
    if child.ended is None:
        child.ended = time.monotonic()
    child.sweep()
    return child, limits, reason
