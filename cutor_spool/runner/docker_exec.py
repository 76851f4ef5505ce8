"""Watching one exec: its output with a byte cap, its limits, and when it is over.

An exec is over when its main process exits, not when its output stream closes: the engine keeps
the stream open while anything holds the stage's stdout (a background child), and then gives up
only two seconds later. So, like the bubblewrap backend (whose pid 1 takes the pid namespace down
with it), the end of the main process ends the stage: what it left behind is killed and the
stream drained. The main process is known by its host pid (from the engine, once it has started)
through a pidfd; before that, the engine is asked about it every INSPECT_POLL.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from cutor_spool.errors import SandboxError
from cutor_spool.runner.capture import Capture
from cutor_spool.runner.docker_cgroup import ContainerCgroup, Process
from cutor_spool.runner.docker_stream import FrameReader
from cutor_spool.runner.supervise import LimitWatch

log = logging.getLogger(__name__)

INSPECT_POLL = 0.1  # seconds between questions to the engine until the main process is known
DRAIN = 2.0  # after the main process ended and its leftovers were killed: the rest of the stream
EXIT_WAIT = 10.0  # for the engine to record the exit code of an exec that is over


class ExecApi(Protocol):
    def exec_inspect(self, exec_id: str) -> dict[str, Any]: ...


@dataclass
class ExecWatch:
    api: ExecApi
    exec_id: str
    cgroup: ContainerCgroup
    watch: LimitWatch
    capture: Capture
    killed_for: str | None = None
    engine: bytearray = field(default_factory=bytearray)  # the engine's own messages (stream 3)
    ended: float | None = None  # when the main process was seen to end
    cpu_seen: float = 0.0  # the last CPU reading, in case the container's cgroup disappears
    container_lost: bool = False
    recorded: int | None = None  # the exit code, when the engine gave it while we watched
    _reader: FrameReader = field(default_factory=FrameReader)

    def _feed(self, data: bytes) -> None:
        for stream, piece in self._reader.feed(data):
            if stream == "engine":
                self.engine += piece[:4096]
            elif not self.capture.feed(stream, piece) and self.killed_for is None:
                self.killed_for = "output"

    def run(self, sock: socket.socket, early: bytes) -> None:
        """Reads until the exec is over or must be stopped; leaves the stage's processes dead."""
        sel = selectors.DefaultSelector()
        sel.register(sock, selectors.EVENT_READ, "stream")
        pidfd: int | None = None
        stream_open, main_done, swept = True, False, False
        next_inspect = self.watch.started + INSPECT_POLL
        drain_until, quiet_polls = 0.0, 0
        self._feed(early)
        try:
            while self.killed_for is None and not (main_done and not stream_open):
                wait = self.watch.next_wait()
                if sel.get_map():
                    events = sel.select(wait)
                else:  # the stream ended, the main process is not known: the engine is asked soon
                    time.sleep(min(wait, 0.001 * 2**quiet_polls))  # after the exit, or backs off
                    quiet_polls = min(quiet_polls + 1, 5)
                    events = []
                for key, _ in events:
                    if key.data == "main":
                        sel.unregister(key.fileobj)
                        main_done = True
                        continue
                    try:
                        data = sock.recv(262144)
                    except BlockingIOError:
                        continue
                    if data:
                        self._feed(data)
                    else:
                        sel.unregister(sock)
                        stream_open = False
                now = time.monotonic()
                if not main_done and pidfd is None and (not stream_open or now >= next_inspect):
                    next_inspect = now + INSPECT_POLL
                    info = self.api.exec_inspect(self.exec_id)
                    if info.get("ExitCode") is not None and not info.get("Running"):
                        main_done, self.recorded = True, int(info["ExitCode"])
                    elif info.get("Pid"):
                        pidfd = self._open_main(int(info["Pid"]))
                        if pidfd is not None:
                            sel.register(pidfd, selectors.EVENT_READ, "main")
                if main_done:
                    if self.ended is None:
                        self.ended = now
                    if not swept:  # what the main process left behind dies with it
                        self._kill()
                        swept, drain_until = True, now + DRAIN
                    elif now > drain_until:
                        log.warning("exec %s: the engine kept the stream open after the stage ended", self.exec_id[:12])
                        break
                    continue
                if self.killed_for is None:
                    self.killed_for = self._check()
        except BaseException:
            with contextlib.suppress(Exception):  # the error that got us here is the one to report
                self._kill()
            raise
        finally:
            sel.close()
            if pidfd is not None:
                os.close(pidfd)
        if self.ended is None:
            self.ended = time.monotonic()
        self._kill()

    def _check(self) -> str | None:
        try:
            reason = self.watch.check()
            self.cpu_seen = self.watch.cpu.cpu_seconds() - self.watch.cpu_offset if self.watch.cpu else 0.0
            self.cgroup.sample()
        except FileNotFoundError:  # the container died (its keeper was killed): nothing left to watch
            self.container_lost = True
            self.watch.cpu = None
            return self.watch.check()
        return reason

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

    def _kill(self) -> None:
        try:
            self.cgroup.kill_stage()
        except FileNotFoundError:
            self.container_lost = True

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
                self._kill()
            time.sleep(0.005)
