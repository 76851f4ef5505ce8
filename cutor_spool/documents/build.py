"""`builds/done/<key>/result.json`: the record of a built (or failed) Nix environment.

Written once by the builder when it commits the build (`builder/worker.py`); read by the
executors that use the environment, by `cutor-spool packages` and `gc` (`builder/inventory.py`)
and by the status page. A rejected request (its `request.json` unusable) has only `key`, `status`
and `message`; a build the system gave up on has no environment; a built one has everything.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar

from cutor_spool.documents.base import Document, Number
from cutor_spool.documents.stage import StageStatus


class BuildStatus(StrEnum):
    OK = "ok"
    FAILED = "failed"  # Nix refused or could not build it: the submission's dependency failure
    ERROR = "error"  # the system gave up on it after its attempts (not cached for new requests)
    REJECTED = "rejected"  # the request itself was unusable


class BuiltPackage(Document):
    nullable: ClassVar[frozenset[str]] = frozenset({"attr", "nar_size", "closure_size"})

    attr: str | None = None  # the nixpkgs attribute asked for (None: a dependency of a Nix file)
    name: str
    pname: str
    version: str
    path: str
    nar_size: int | None = None
    closure_size: int | None = None


class BuildLimitsApplied(Document):
    wall_time: Number
    memory: int
    output: int
    processes: int


class BuildStep(Document):
    step: str
    exit_code: int | None
    wall_time: Number


class BuildRecord(Document):
    # Written as null by a finished build when they have no value (a failed build has no env_path).
    nullable: ClassVar[frozenset[str]] = frozenset(
        {"message", "env_path", "drv_path", "shell", "env_script", "closure_size", "exit_code"}
    )

    key: str
    system: str | None = None
    nixpkgs: str | None = None
    nixpkgs_identity: str | None = None
    request: dict[str, Any] | None = None  # what was asked: {"attrs": [...]} or {"nix": name, "sha256": ...}
    builder: str | None = None
    host: str | None = None
    attempt: int | None = None
    limits: BuildLimitsApplied | None = None
    status: BuildStatus
    stage_status: StageStatus | None = None
    message: str | None = None
    packages: list[BuiltPackage] | None = None
    env_path: str | None = None
    drv_path: str | None = None
    shell: str | None = None
    env_script: str | None = None  # the env script's file name in the entry
    closure_size: int | None = None
    paths: list[tuple[str, int]] | None = None  # the closure: (store path, NAR size)
    exported: bool | None = None  # copied to the spool's binary cache
    exit_code: int | None = None
    log: str | None = None
    log_truncated: bool | None = None
    started_at: str | None = None
    built_at: str | None = None
    build_time: Number | None = None
    cpu_time: Number | None = None
    memory: int | None = None
    steps: list[BuildStep] | None = None

    @property
    def closure(self) -> dict[str, int]:
        return dict(self.paths or [])
