"""The one interface every stage goes through, and the choice of backend."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol

from cutor_spool.config import BackendName, SpoolConfig
from cutor_spool.runner.slots import Slot, SlotPool
from cutor_spool.runner.stage import StageOutput, StageSpec


class Sandbox(Protocol):
    """A submission's sandbox: one slot (uid and work area), any number of stages."""

    slot: Slot

    @property
    def workdir(self) -> Path: ...

    def run(self, spec: StageSpec, cancel: threading.Event | None = None) -> StageOutput: ...

    def close(self) -> None: ...


class Backend(Protocol):
    name: str

    def open(self, slot: Slot, label: str) -> Sandbox: ...

    def sweep(self, pool: SlotPool) -> int:
        """Cleans up what dead workers on this host left behind (for slots nobody holds)."""
        ...

    def close(self) -> None: ...


def make_backend(name: BackendName, config: SpoolConfig, state_dir: Path) -> Backend:
    if name == BackendName.DOCKER:
        from cutor_spool.runner.docker import DockerBackend

        backend: Backend = DockerBackend(config, state_dir)
        return backend
    from cutor_spool.runner.bwrap import BubblewrapBackend

    box = config.sandbox
    return BubblewrapBackend(
        state_dir=state_dir, uid_base=box.uid_base, slots=box.slots, tmp_size=box.tmp_size, extra_ro=list(box.ro_binds),
        seccomp=box.seccomp,
    )  # fmt: skip
