"""The choice of backend. Each is imported only when chosen: the Docker SDK is not needed, nor
loaded, on a host that runs bubblewrap."""

from __future__ import annotations

from pathlib import Path

from cutor_spool.config import BackendName, SpoolConfig
from cutor_spool.runner.sandbox import Backend


def make_backend(name: BackendName, config: SpoolConfig, state_dir: Path) -> Backend:
    if name == BackendName.DOCKER:
        from cutor_spool.runner.docker import DockerBackend

        backend: Backend = DockerBackend(config, state_dir)
        return backend
    from cutor_spool.runner.bwrap import BubblewrapBackend

    box = config.sandbox
    return BubblewrapBackend(
        state_dir=state_dir, uid_base=box.uid_base, slots=box.slots, tmp_size=box.tmp_size, extra_ro=list(box.ro_binds),
        seccomp=box.seccomp, etc=tuple(box.etc), pin=box.pinning.enabled, warm=box.warm_slots,
    )  # fmt: skip
