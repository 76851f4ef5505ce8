"""Where things live in a spool (DESIGN section 2)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cutor_spool.config import CONFIG_NAME, DEFAULT_CONFIG_TEXT


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
class SpoolPaths:
    root: Path

    @property
    def submissions(self) -> QueueDirs:
        return QueueDirs(self.root)

    @property
    def builds(self) -> QueueDirs:
        return QueueDirs(self.root / "builds")

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
        subs, builds = self.submissions, self.builds
        return [
            self.tmp,
            subs.incoming,
            subs.active,
            subs.done,
            builds.incoming,
            builds.active,
            builds.done,
            self.workers,
            self.status,
        ]

    def exists(self) -> bool:
        return all(d.is_dir() for d in self.directories())

    def init(self, *, write_config: bool = True) -> None:
        for directory in self.directories():
            directory.mkdir(parents=True, exist_ok=True)
        if write_config and not self.config.exists():
            tmp = self.tmp / f".{CONFIG_NAME}.{os.getpid()}"
            tmp.write_text(DEFAULT_CONFIG_TEXT)
            os.replace(tmp, self.config)
