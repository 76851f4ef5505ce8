"""`result/dependencies.json`: the dependencies stage of a submission, as its executor saw it.

Not a sandbox run like the other stages: the environment comes from a builder (built for this
submission, joined while someone else's build of it ran, or cached), so the document says which
one (`key`, `source`, the build record's essentials) next to the stage fields every stage has
(`status`, the build log as `stderr` and `output`, times, memory, limits). A request that never got
a build (the stage's wall time ran out, an unusable Nix file) has only some of them.
"""

from __future__ import annotations

from typing import Any, ClassVar

from cutor_spool.documents.base import Document, Number
from cutor_spool.documents.build import BuildStatus, BuiltPackage
from cutor_spool.documents.stage import StageStatus, Truncated


class EnvironmentInfo(Document):
    nullable: ClassVar[frozenset[str]] = frozenset({"path", "drv", "closure_size", "shell"})

    path: str | None = None  # the environment's store path
    drv: str | None = None
    paths: int  # store paths in its closure
    closure_size: int | None = None
    shell: str | None = None
    substituted: bool  # copied from the spool's binary cache into this host's store


class BuildInfo(Document):
    nullable: ClassVar[frozenset[str]] = frozenset({"builder", "host", "built_at", "attempt"})

    status: BuildStatus
    builder: str | None = None
    host: str | None = None
    built_at: str | None = None
    attempt: int | None = None


class DependenciesDocument(Document):
    # What the build record did not say is written as null (a failed build has no environment).
    nullable: ClassVar[frozenset[str]] = frozenset(
        {"request", "nixpkgs", "system", "exit_code", "signal", "cpu_time", "wall_time", "memory", "limits", "message"}
    )

    stage: str = "dependencies"
    status: StageStatus
    key: str | None = None  # the environment's key in builds/done/
    source: str | None = None  # cached, requested (built for this one), joined (someone else's build)
    waited: Number | None = None  # seconds until the environment was there (or the stage gave up)
    request: dict[str, Any] | None = None
    nixpkgs: str | None = None
    system: str | None = None
    environment: EnvironmentInfo | None = None
    packages: list[BuiltPackage] | None = None
    build: BuildInfo | None = None
    stdout: str | None = None
    stderr: str | None = None  # the tail of the build log
    output: str | None = None
    exit_code: int | None = None
    signal: str | None = None
    truncated: Truncated | None = None
    cpu_time: Number | None = None
    wall_time: Number | None = None
    memory: int | None = None
    limits: dict[str, Number] | None = None  # the build's limits, or the stage's when it never got one
    message: str | None = None
