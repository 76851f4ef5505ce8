"""`deployment.yaml`: what a deployment's directory asks of the spool.

The same fields as `submission.yaml` where they apply, with the same types (imported from
`submission.py`, so that a value means the same in both): `dependencies`, `compile`, `run` or
`server` (one of the two: a program per invocation, or a warm server, runner/invocations/warm.py),
`files` (inline files), `env`, `limits` (`compile` and `run`) and `network`. Unknown keys are
refused. Every problem is listed at once, each with its field's path, as a submission's
validation does.

`env` holds secrets: it is sealed to the spool's server key by `deploy` and never appears in the
spec's copy of the manifest (`manifest_for_spec`). The inline `files` are materialised into the
bundle by `deploy`, so the spec's manifest carries none: the bundle is the whole work area to be.
"""

from __future__ import annotations

import binascii
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from cutor_spool.deployments.errors import BadManifest
from cutor_spool.limits import Duration, Limits, LimitsSpec
from cutor_spool.submission import (
    Dependencies,
    EnvName,
    InlineFile,
    NixExpression,
    ScriptFile,
    ScriptValue,
    _no_nul,
)
from cutor_spool.yamlload import YamlProblem, load_yaml

MANIFEST_NAME = "deployment.yaml"
MAX_MANIFEST = 1 << 20
MAX_ENV_VALUE = 65536
EnvValue = Annotated[str, Field(max_length=MAX_ENV_VALUE), AfterValidator(_no_nul)]
# Names of the union members and types that pydantic puts in an error's location.
_TAG = re.compile(
    r"^(str|int|float|bool|text|mapping|list|list\[.*|dict\[.*|function-.*|constrained-.*|literal\[.*|enum|"
    r"ScriptFile|NixExpression|LimitsSpec|InlineFile|ServerSpec)$"
)


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DeploymentLimits(_Strict):
    compile: LimitsSpec | None = None
    run: LimitsSpec | None = None


# -- warm servers (runner/invocations/warm.py) ------------------------------------------------
MAX_IDLE_TIMEOUT = 3600.0
MAX_READY_TIMEOUT = 300.0
MAX_REQUESTS = 1_000_000


def _between(low: float, high: float) -> AfterValidator:
    def check(value: float) -> float:
        if not low <= value <= high:
            raise ValueError(f"must be between {low:g} and {high:g} seconds")
        return value

    return AfterValidator(check)


class ServerSpec(_Strict):
    """`server:`: a program started once that answers HTTP/1.1 on the Unix socket named by
    $CUTOR_SOCKET, instead of a `run:` program per invocation."""

    command: ScriptValue = Field(description="starts the server: a shell script or {file: NAME}")
    idle_timeout: Annotated[Duration, _between(1, MAX_IDLE_TIMEOUT)] = 60.0
    max_requests: int = Field(default=1000, ge=1, le=MAX_REQUESTS)
    ready_timeout: Annotated[Duration, _between(0.1, MAX_READY_TIMEOUT)] = 10.0


class DeploymentManifest(_Strict):
    """A deployment directory's `deployment.yaml`."""

    dependencies: Dependencies = Field(default_factory=list, description="nixpkgs attribute paths, or {nix: FILE}")
    compile: ScriptValue | None = Field(default=None, description="run once, at deploy: a script or {file: NAME}")
    run: ScriptValue | None = Field(default=None, description="run per invocation: a shell script or {file: NAME}")
    server: ServerSpec | None = Field(default=None, description="a warm server instead of `run`")
    files: list[InlineFile] = Field(default_factory=list, max_length=10_000)
    env: dict[EnvName, EnvValue] = Field(default_factory=dict, description="sealed to the spool's key")
    limits: DeploymentLimits = DeploymentLimits()
    network: bool = False

    @model_validator(mode="after")
    def _run_or_server(self) -> DeploymentManifest:
        if self.run is None and self.server is None:
            raise ValueError("give `run` (a program per invocation) or `server` (a warm server)")
        if self.run is not None and self.server is not None:
            raise ValueError("give `run` or `server`, not both")
        return self


def _where(loc: tuple[int | str, ...]) -> str:
    parts = [str(item) for i, item in enumerate(loc) if not (_TAG.match(str(item)) and not (i and loc[i - 1] == "env"))]
    return ".".join(parts) or "(top level)"


def validation_problems(exc: ValidationError) -> list[tuple[str, str]]:
    """One `(field path, message)` per field, as `submission.yaml`'s validation words them."""
    grouped: dict[str, list[str]] = {}
    for err in exc.errors(include_url=False):
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = f"unknown key (not part of {MANIFEST_NAME})"
        elif err["type"] == "missing":
            message = "is required"
        grouped.setdefault(_where(err["loc"]), []).append(message)
    problems = []
    for where, messages in grouped.items():
        unique = list(dict.fromkeys(messages))
        text = unique[0] if len(unique) == 1 else "expected one of the accepted forms: " + "; or ".join(unique)
        problems.append((where, text))
    return problems


def parse_manifest(data: Mapping[str, Any], *, maximum: Limits | None = None) -> DeploymentManifest:
    """Validates a mapping (deployment.yaml's, or a spec's `manifest`); BadManifest lists every
    problem. With `maximum`, limits above the spool's are refused too."""
    context = {"maximum": maximum} if maximum is not None else None
    try:
        return DeploymentManifest.model_validate(dict(data), context=context)
    except ValidationError as exc:
        raise BadManifest(validation_problems(exc)) from None


def read_manifest(directory: Path, *, maximum: Limits | None = None) -> DeploymentManifest:
    """`directory/deployment.yaml`, validated; the files it names (`{file: NAME}` scripts, a
    `{nix: FILE}`) must be regular files of the directory, and an inline file must not take the
    name of one. BadManifest lists every problem."""
    path = directory / MANIFEST_NAME
    raw = _load(path)
    manifest = parse_manifest(raw, maximum=maximum)
    problems = [*_named_files(directory, manifest), *_inline_collisions(directory, manifest)]
    if problems:
        raise BadManifest(problems)
    return manifest


def _load(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_MANIFEST + 1)
    except FileNotFoundError:
        raise BadManifest([(MANIFEST_NAME, f"is missing from {path.parent}: every deployment needs one")]) from None
    except OSError as exc:
        raise BadManifest([(MANIFEST_NAME, f"cannot be read: {exc.strerror}")]) from None
    if len(data) > MAX_MANIFEST:
        raise BadManifest([(MANIFEST_NAME, f"is larger than {MAX_MANIFEST} bytes")])
    try:
        raw = load_yaml(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadManifest([(MANIFEST_NAME, f"is not valid UTF-8 (byte {exc.start})")]) from None
    except YamlProblem as exc:
        raise BadManifest([(MANIFEST_NAME, f"is not valid YAML: {exc}")]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise BadManifest([(MANIFEST_NAME, f"must be a mapping of keys to values, not a {type(raw).__name__}")])
    return raw


def _is_regular(directory: Path, name: str) -> bool:
    """Whether `name` is a regular file of the directory, no symlink followed below it."""
    path = directory
    for part in name.split("/"):
        path = path / part
        if path.is_symlink():
            return False
    return path.is_file()


def _named_files(directory: Path, manifest: DeploymentManifest) -> list[tuple[str, str]]:
    inline = {f.name for f in manifest.files}
    named: list[tuple[str, str]] = []
    scripts = {"compile": manifest.compile, "run": manifest.run}
    if manifest.server is not None:
        scripts["server.command"] = manifest.server.command
    for stage, value in scripts.items():
        if isinstance(value, ScriptFile):
            named.append((f"{stage}.file", value.file))
    if isinstance(manifest.dependencies, NixExpression):
        named.append(("dependencies.nix", manifest.dependencies.nix))
    return [
        (where, f"{name!r} is not a file of the deployment")
        for where, name in named
        if name not in inline and not _is_regular(directory, name)
    ]


def _inline_collisions(directory: Path, manifest: DeploymentManifest) -> list[tuple[str, str]]:
    problems = []
    seen: set[str] = set()
    for i, item in enumerate(manifest.files):
        if item.name in seen or os.path.lexists(directory / item.name):
            problems.append((f"files.{i}.name", f"{item.name!r} is given twice (inline and as a file?)"))
        elif item.name == MANIFEST_NAME:
            problems.append((f"files.{i}.name", f"{MANIFEST_NAME} is never part of the bundle"))
        seen.add(item.name)
        try:
            item.decoded()
        except (ValueError, binascii.Error) as exc:
            problems.append((f"files.{i}.content", f"is not valid {item.encoding}: {exc}"))
    return problems


def inline_files(manifest: DeploymentManifest) -> dict[str, tuple[bytes, bool]]:
    """The inline files as `pack` takes them: name -> (bytes, executable)."""
    return {item.name: (item.decoded(), item.executable) for item in manifest.files}


def manifest_for_spec(manifest: DeploymentManifest) -> dict[str, Any]:
    """The manifest as the spec carries it: JSON, no unset values, no `env` (secrets are only in
    the spec sealed) and no `files` (`deploy` puts them into the bundle)."""
    return manifest.model_dump(mode="json", exclude={"env", "files"}, exclude_none=True)
