"""`builds/` as an executor sees it: find a built environment, ask for a build, wait for it.

    builds/incoming/<key>/   request.json (+ cutor.nix), .ready     a request
    builds/active/<key>.<t>/ the same, .lease, attempts.jsonl         being built
    builds/done/<key>/       result.json, env.sh, build.log, uses/    built (or failed)

Asking is one atomic rename of a prepared directory from `tmp/` into `builds/incoming/<key>`.
If that name is taken (ENOTEMPTY/EEXIST) someone else asked first: wait for `builds/done/<key>`.
A request that slips in after the build was committed is discarded by the builder, so many
executors asking for one new key cause one build.

Every submission that uses an environment leaves a marker `builds/done/<key>/uses/<id>` *before*
it reads the environment (its mtime is the last use, on the filesystem's clock). `gc` renames an
environment away before deleting it and looks at the markers again afterwards, so a use that
started in between is either seen (and the environment kept) or finds nothing and asks again.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path

from cutor_spool.atomic import read_json, write_bytes, write_json
from cutor_spool.builder.keys import NIX_FILE_NAME, REQUEST_NAME, EnvRequest, short
from cutor_spool.documents.build import BuildRecord
from cutor_spool.errors import SpoolIOError
from cutor_spool.layout import READY, SpoolPaths
from cutor_spool.watcher.clock import stamp
from cutor_spool.watcher.ids import new_token
from cutor_spool.watcher.notify import Waiter

log = logging.getLogger(__name__)

RESULT_NAME = "result.json"
ENV_SCRIPT_NAME = "env.sh"
LOG_NAME = "build.log"
USES_NAME = "uses"
# How often a waiter checks that its request still exists somewhere (and asks again if not).
RECHECK = 5.0


class Builds:
    def __init__(self, paths: SpoolPaths, *, poll: bool = False, interval: float = 1.0) -> None:
        self.paths = paths
        self.dirs = paths.builds
        self.poll = poll
        self.interval = interval

    def done(self, key: str) -> Path:
        return self.dirs.done / key

    def use(self, key: str, submission_id: str) -> BuildRecord | None:
        """Marks the environment used by `submission_id` and returns its result.json; None if
        it is not built (or is being evicted)."""
        marker = self.done(key) / USES_NAME / submission_id
        try:
            stamp(marker, create=True)  # a retry of the same submission is a use again (the server's time)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise SpoolIOError(f"cannot mark build {short(key)} used: {exc.strerror}") from exc
        return self.result(key)

    def result(self, key: str) -> BuildRecord | None:
        try:
            data = read_json(self.done(key) / RESULT_NAME)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError) as exc:
            log.warning("build %s: unreadable result.json (%s)", short(key), exc)
            return None
        record = BuildRecord.read(data)
        if record is None:
            log.warning("build %s: result.json is not a build record", short(key))
        return record

    def env_script(self, key: str) -> bytes:
        with open(self.done(key) / ENV_SCRIPT_NAME, "rb") as fh:
            return fh.read()

    def log_tail(self, key: str, limit: int = 64 * 1024) -> tuple[str, bool]:
        try:
            with open(self.done(key) / LOG_NAME, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                fh.seek(max(0, size - limit))
                return fh.read().decode("utf-8", "replace"), size > limit
        except OSError:
            return "", False

    def pending(self, key: str) -> bool:
        """Asked for and not finished: in incoming/, or claimed in active/."""
        if os.path.lexists(self.dirs.incoming / key):
            return True
        return self.claimed(key)

    def claimed(self, key: str) -> bool:
        prefix = key + "."
        try:
            with os.scandir(self.dirs.active) as it:
                return any(e.name.startswith(prefix) for e in it)
        except FileNotFoundError:
            return False

    def send(self, request: EnvRequest, nix_text: bytes | None) -> bool:
        """Asks for a build of `request`. False if someone else asked first."""
        key = request.key()
        staging = self.paths.tmp / f"build-{key}-{new_token()}"
        try:
            staging.mkdir()
            write_json(staging / REQUEST_NAME, request.model_dump(mode="json"))
            if nix_text is not None:
                write_bytes(staging / NIX_FILE_NAME, nix_text)
            write_bytes(staging / READY, b"")
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise SpoolIOError(f"cannot prepare a build request: {exc}") from exc
        try:
            os.rename(staging, self.dirs.incoming / key)
        except OSError as exc:
            if not staging.exists():  # NFS: the rename happened although it reported failure
                return True
            shutil.rmtree(staging, ignore_errors=True)
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                return False
            raise SpoolIOError(f"cannot request build {short(key)}: {exc.strerror}") from exc
        return True

    def evict(self, key: str, reason: str) -> bool:
        """Moves a done entry out of the way (a system error, or its paths cannot be had), so that
        the next request builds it again. One rename: of several executors, one wins."""
        trash = self.paths.tmp / f".evicted-{key}-{new_token()}"
        try:
            os.rename(self.done(key), trash)
        except OSError:
            return False
        log.warning("build %s: set aside for a new build (%s)", short(key), reason)
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def wait(self, key: str, *, until: float, cancel: threading.Event) -> None:
        """Returns when builds/done/ changes, RECHECK seconds pass, `until` (monotonic) is reached
        or `cancel` is set; the caller looks again."""
        with Waiter([self.dirs.done], poll=self.poll) as waiter:
            end = min(until, time.monotonic() + RECHECK)
            while not cancel.is_set() and time.monotonic() < end:
                if os.path.lexists(self.done(key) / RESULT_NAME):
                    return
                waiter.wait(min(self.interval, max(end - time.monotonic(), 0.0)))


def request_of(entry: Path) -> tuple[EnvRequest, bytes | None]:
    """Reads a build entry's request (the builder's side). Raises ValueError if it is bad."""
    with open(entry / REQUEST_NAME, "rb") as fh:
        raw = fh.read(1 << 20)
    request = EnvRequest.model_validate(json.loads(raw))
    nix_text = None
    if request.nix_sha256 is not None:
        fd = os.open(entry / NIX_FILE_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as fh:
            nix_text = fh.read(1 << 20)
    return request, nix_text
