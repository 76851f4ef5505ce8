"""`workers/<worker-id>.json`: each executor's and builder's heartbeat and current work.

Rewritten every `heartbeat` seconds by the worker's maintenance thread (`watcher/worker.py`) and
removed when it stops; read by the status page and `metrics.prom`, and by a reaper that expires one
of the worker's leases (`watcher/lost.py`: did the worker die, and what else did it hold?).
Liveness is judged from the file's mtime on the filesystem's clock, never from `heartbeat_at` (the
worker's own clock).
Besides its identity, a worker tells what it runs with: an executor its backend and, while its
host cannot run stages, `sandbox` (why claiming is paused), with CPU pinning the CPUs it pins
slots to (`cpus`, and each current claim's `cpu`); a builder its store and Nix settings; a pilot
(a batch engine's job, watcher/pilot.py) the limits after which it leaves by itself.
"""

from __future__ import annotations

from cutor_spool.documents.base import Document, Number


class CurrentWork(Document):
    """A claim the worker holds: its entry, its state, since when, which attempt, and with CPU
    pinning the CPU its slot's stages run on (once it has a slot)."""

    id: str
    state: str
    since: str
    attempt: int
    cpu: int | None = None
    helper_cpus: list[int] | None = None  # the CPUs of its other slots (an interactor's), pinned


class UnexpectedError(Document):
    """The last programming error a worker met (watcher/maintenance.py): what, where, when."""

    type: str
    message: str
    where: str
    at: str


class NixInfo(Document):
    system: str
    sandbox: bool | str


class PilotInfo(Document):
    """A pilot's limits (`--exit-when-idle` in seconds, `--max-jobs`); None: not set."""

    exit_when_idle: Number | None = None
    max_jobs: int | None = None


class Heartbeat(Document):
    worker: str
    kind: str  # executor, builder
    host: str
    pid: int
    version: str
    config: str | None = None  # the digest of the spool.yaml it read at start (config.config_digest)
    started_at: str
    heartbeat_at: str  # the worker's clock: shown, never used to judge liveness
    heartbeat_interval: Number
    processed: int
    concurrency: int | None = None
    poll: bool | None = None
    backend: str | None = None  # an executor's
    cpus: list[int] | None = None  # an executor's with CPU pinning: the CPUs it gives its slots
    sandbox: str | None = None  # an executor whose host cannot run stages: why it does not claim
    store: str | None = None  # a builder's
    nix: NixInfo | None = None
    pilot: PilotInfo | None = None  # a pilot worker's limits
    current: list[CurrentWork] = []
    unexpected_errors: int = 0  # programming errors met since start (not failures of the system)
    last_unexpected_error: UnexpectedError | None = None
