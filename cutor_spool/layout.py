"""Where things live in a spool (DESIGN section 2)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cutor_spool.config import CONFIG_NAME, SharedConfig, load_config
from cutor_spool.config_template import DEFAULT_CONFIG_TEXT, shared_config_text
from cutor_spool.documents.states import ATTEMPTS_LOG
from cutor_spool.errors import ConfigError
from cutor_spool.sharing import Sharing

# The marker a client writes into an entry before its rename into incoming/: ready at once.
READY = ".ready"


@dataclass(frozen=True)
class QueueDirs:
    """One queue of the spool protocol: submissions at the top, builds under `builds/`."""

    root: Path

    @property
    def incoming(self) -> Path:
        return self.root / "incoming"

    @property
    def active(self) -> Path:
        return self.root / "active"

    @property
    def done(self) -> Path:
        return self.root / "done"


@dataclass(frozen=True)
class QueueKind:
    """One queue of the spool protocol: its folder under the spool ("" is the top) and where each
    entry keeps its attempt log (inside the entry, so that it travels with every rename)."""

    folder: str
    attempts_log: str
    private: bool = False  # in a shared spool, an entry is sealed for its submitter (sharing.py)
    prioritised: bool = False  # claimed by priority lane (watcher/priority.py), and so counted per lane


SUBMISSIONS = QueueKind(
    "", ATTEMPTS_LOG, private=True, prioritised=True
)  # the log in result/, where clients read results
BUILDS = QueueKind("builds", "attempts.jsonl")
# Deployments' builds and invocations. Their log is in result/, as a submission's: the claim then
# makes result/ itself (setting aside one the client planted), where the executor writes results.
INVOCATIONS = QueueKind("invocations", ATTEMPTS_LOG)
# Every queue of the spool: `init` makes their folders and every worker reaps them all. A new
# queue is a line here and a `watcher.worker.QueueWorker` subclass that serves it.
QUEUES = (SUBMISSIONS, BUILDS, INVOCATIONS)


@dataclass(frozen=True)
class SpoolPaths:
    root: Path

    def queue(self, kind: QueueKind) -> QueueDirs:
        return QueueDirs(self.root / kind.folder)

    @property
    def submissions(self) -> QueueDirs:
        return self.queue(SUBMISSIONS)

    @property
    def builds(self) -> QueueDirs:
        return self.queue(BUILDS)

    @property
    def invocations(self) -> QueueDirs:
        return self.queue(INVOCATIONS)

    @property
    def deployments(self) -> Path:
        """`deployments/<cid>/`: what the spool knows of a deployment beyond its immutable spec
        (its build record); the spec and bundles are blobs of `cas/`."""
        return self.root / "deployments"

    @property
    def terms(self) -> Path:
        """The operator's terms and conditions, which `deploy` shows and the owner signs."""
        return self.root / "terms.md"

    @property
    def ledger(self) -> Path:
        """`ledger/`: the escrow's journals, holds and checkpoints (ledger/, docs/ledger.md)."""
        return self.root / "ledger"

    @property
    def notify(self) -> Path:
        """`notify/<id>.json`: callbacks waiting to be sent (watcher/callbacks.py)."""
        return self.root / "notify"

    @property
    def cancels(self) -> Path:
        """`cancel/<id>`: a client's request that submission <id> stop (watcher/cancel.py)."""
        return self.root / "cancel"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def workers(self) -> Path:
        return self.root / "workers"

    @property
    def status(self) -> Path:
        return self.root / "status"

    @property
    def config(self) -> Path:
        return self.root / CONFIG_NAME

    def directories(self) -> list[Path]:
        queues = [self.queue(kind) for kind in QUEUES]
        return [
            self.tmp,
            *(d for q in queues for d in (q.incoming, q.active, q.done)),
            self.workers,
            self.status,
            self.deployments,
            self.cancels,
            self.notify,
            self.ledger,
        ]

    def exists(self) -> bool:
        return all(d.is_dir() for d in self.directories())

    def complete(self) -> None:
        """Makes the folders that a spool made by an older version lacks (a new queue, cancel/),
        with the modes of the spool's own sharing model."""
        if not self.exists():
            self.init(write_config=False, shared=load_config(self.root).shared)

    def init(self, *, write_config: bool = True, shared: SharedConfig | None = None) -> None:
        """Makes the spool's directories and a commented spool.yaml. `shared`: a spool for users
        who do not trust each other (`sharing.py`); its owners and modes are set (again) on every
        directory, and spool.yaml must say the same groups."""
        sharing = Sharing.from_config(shared)  # an unknown group is refused before anything is made
        for directory in self.directories():
            directory.mkdir(parents=True, exist_ok=True)
        if write_config and not self.config.exists():
            tmp = self.tmp / f".{CONFIG_NAME}.{os.getpid()}"
            tmp.write_text(DEFAULT_CONFIG_TEXT + (shared_config_text(shared) if shared else ""))
            os.replace(tmp, self.config)
        if sharing is None or shared is None:
            return
        if load_config(self.root).shared != shared:
            raise ConfigError(
                f"{self.config} exists and does not say this spool is shared with these groups; add:\n"
                + shared_config_text(shared)
            )
        sharing.apply(self.root, [self.builds.root, *self.directories()])
        os.chown(self.config, 0, 0)
        os.chmod(self.config, 0o644)
