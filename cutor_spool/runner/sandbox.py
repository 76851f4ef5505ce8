"""The one interface every stage goes through: a sandbox (a slot's uid and work area), the stages it
runs or spawns, and the backend that opens it. Backends (bwrap.py, docker.py) implement it;
backend.py chooses one; nothing here knows a backend."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Protocol

from cutor_spool.runner.slots import Slot, SlotPool
from cutor_spool.runner.stage import StageOutput, StageSpec

# For `Sandbox.spawn`: a new pipe whose other end is the handle's `stdin` or `stdout`.
PIPE = subprocess.PIPE


class StageProcess(Protocol):
    """A stage started by `Sandbox.spawn`, supervised in the background."""

    stdin: int | None  # the writing end of its stdin, when spawned with stdin=PIPE (the caller closes it)
    stdout: int | None  # the reading end of its stdout, when spawned with stdout=PIPE (the caller closes it)

    def wait(self) -> StageOutput:
        """Its output once it has ended, as `Sandbox.run` gives it."""
        ...

    def kill(self) -> None:
        """Stops it now (its output then says it was stopped); `wait` still gives its output."""
        ...

    def cpu_seconds(self) -> float | None:
        """The CPU time its processes have used so far, None once it has ended (for an idleness
        limit: two stages waiting on each other use none)."""
        ...


class Sandbox(Protocol):
    """A submission's sandbox: one slot (uid and work area), any number of stages, one at a time."""

    slot: Slot

    @property
    def workdir(self) -> Path: ...

    def run(self, spec: StageSpec, cancel: threading.Event | None = None) -> StageOutput: ...

    def spawn(
        self,
        spec: StageSpec,
        cancel: threading.Event | None = None,
        *,
        stdin: int | None = None,
        stdout: int | None = PIPE,
    ) -> StageProcess:
        """Starts a stage and returns at once, so that stages of two sandboxes can be wired
        together (an interactive problem: a solution and its interactor). `stdin`: None reads
        `spec.stdin`, PIPE makes a pipe (the handle's `stdin`), a file descriptor is read (another
        stage's stdout). `stdout`: PIPE makes a pipe (the handle's `stdout`), a file descriptor is
        written, None captures it as `run` does. stderr is always captured."""
        ...

    def close(self) -> None: ...


class Backend(Protocol):
    name: str

    def open(self, slot: Slot, label: str) -> Sandbox: ...

    def cpus(self) -> tuple[int, ...]:
        """The CPUs this backend can pin a slot's stages to (CPU pinning: `Slot.cpu`)."""
        ...

    def sweep(self, pool: SlotPool) -> int:
        """Cleans up what dead workers on this host left behind (for slots nobody holds)."""
        ...

    def close(self) -> None: ...
