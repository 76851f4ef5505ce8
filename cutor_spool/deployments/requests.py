"""Dropping a deployment's requests into the spool, and its build record.

An invocation (or a deployment's build) is an entry of the `invocations` queue: `request.json` (an
`InvocationRequest`), the request's data as the file `body`, and the `.ready` marker, prepared in
`tmp/` and renamed into `invocations/incoming/<id>` in one step, as `cutor-spool submit` does for
submissions. The build record `deployments/<cid>/build.json` is written whole (write, fsync,
rename) by `deploy` (pending) and by the executor that built it (ready or failed).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from cutor_spool.atomic import fsync_dir, read_json, write_json
from cutor_spool.documents.deployment import DeploymentBuild, InvocationRequest
from cutor_spool.errors import CutorError
from cutor_spool.layout import READY, SpoolPaths

REQUEST = "request.json"
BODY = "body"
BUILD_RECORD = "build.json"
_CHUNK = 1 << 20


class RequestTooLarge(CutorError):
    """The request's data is above the spool's maximum."""


def new_request_id() -> str:
    return secrets.token_hex(12)


def drop_request(
    paths: SpoolPaths,
    request: InvocationRequest,
    body: bytes | BinaryIO | Iterable[bytes] = b"",
    *,
    entry_id: str | None = None,
    max_body: int | None = None,
) -> str:
    """Writes the entry and renames it into `invocations/incoming/`; returns its id. A body above
    `max_body` raises RequestTooLarge and leaves nothing behind."""
    entry_id = entry_id or new_request_id()
    staging = new_staging(paths, entry_id)
    try:
        _write_body(staging / BODY, body, max_body)
        finish_staging(staging, request)
        commit_staging(paths, staging, entry_id)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return entry_id


def new_staging(paths: SpoolPaths, entry_id: str) -> Path:
    """An empty directory in `tmp/` where an entry is prepared (its body written as `BODY`)."""
    staging = paths.tmp / f"invoke-{entry_id}-{secrets.token_hex(4)}"
    os.mkdir(staging, 0o755)
    return staging


def finish_staging(staging: Path, request: InvocationRequest) -> None:
    """Writes request.json and `.ready` beside the body, and syncs the directory."""
    if not (staging / BODY).exists():
        _write_body(staging / BODY, b"", None)
    write_json(staging / REQUEST, request.dump())
    write_json(staging / READY, {})
    fsync_dir(staging)


def commit_staging(paths: SpoolPaths, staging: Path, entry_id: str) -> None:
    """The one step that makes the entry claimable: rename into `invocations/incoming/<id>`."""
    os.rename(staging, paths.invocations.incoming / entry_id)
    fsync_dir(paths.invocations.incoming)


def _write_body(path: Path, body: bytes | BinaryIO | Iterable[bytes], max_body: int | None) -> None:
    chunks: Iterable[bytes]
    if isinstance(body, bytes):
        chunks = (body,)
    elif hasattr(body, "read"):
        stream = body
        chunks = iter(lambda: stream.read(_CHUNK), b"")
    else:
        chunks = body
    written = 0
    with open(path, "xb") as out:
        for chunk in chunks:
            written += len(chunk)
            if max_body is not None and written > max_body:
                raise RequestTooLarge(f"the request's data is above the spool's maximum of {max_body} bytes")
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())


def build_record_path(paths: SpoolPaths, cid: str) -> Path:
    return paths.deployments / cid / BUILD_RECORD


def write_build_record(paths: SpoolPaths, record: DeploymentBuild) -> None:
    directory = paths.deployments / record.deployment
    directory.mkdir(mode=0o755, exist_ok=True)
    write_json(directory / BUILD_RECORD, record.dump(), beneath=paths.deployments)


def read_build_record(paths: SpoolPaths, cid: str) -> DeploymentBuild | None:
    """The record, or None when there is none (or it is torn or not a record)."""
    try:
        data = read_json(build_record_path(paths, cid), beneath=paths.deployments)
    except (OSError, CutorError, ValueError):
        return None
    return DeploymentBuild.read(data)
