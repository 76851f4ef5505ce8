"""The client side of the spool: submitting, finding a submission, following it to its end.

Submitting is one atomic step for the executors: the copy is made in `tmp/`, fsynced, marked
`.ready`, and renamed into `incoming/<id>`.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cutor_spool.atomic import fsync_dir, read_json, read_lines
from cutor_spool.config import config_digest
from cutor_spool.documents.heartbeat import Heartbeat
from cutor_spool.documents.states import State
from cutor_spool.documents.status import StatusDocument, read_status
from cutor_spool.errors import CutorError
from cutor_spool.layout import READY, SpoolPaths
from cutor_spool.watcher.ids import new_id, split_active, valid_id
from cutor_spool.watcher.notify import Waiter, needs_polling
from cutor_spool.watcher.priority import yaml_priority


class SubmitError(CutorError):
    pass


def _copy_tree(src: Path, dst: Path, *, top: bool = True, mode: int = 0o755) -> None:
    """Copies regular files and directories; symlinks are copied as links (the executor reports
    them); FIFOs, sockets and devices are refused here rather than read (a FIFO would block)."""
    os.mkdir(dst, mode)
    os.chmod(dst, mode)  # whatever the umask
    for entry in os.scandir(src):
        if top and entry.name in (READY, ".lease"):
            continue
        target = dst / entry.name
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(entry.path), target)
        elif stat.S_ISDIR(st.st_mode):
            _copy_tree(Path(entry.path), target, top=False)
        elif stat.S_ISREG(st.st_mode):
            shutil.copyfile(entry.path, target, follow_symlinks=False)
            os.chmod(target, 0o755 if st.st_mode & 0o111 else 0o644)
            fd = os.open(target, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        else:
            raise SubmitError(f"{entry.path}: only regular files and directories can be submitted")
    fsync_dir(dst)


def submit(
    paths: SpoolPaths,
    directory: Path,
    entry_id: str | None = None,
    *,
    private: bool = False,
    priority: int | None = None,
) -> str:
    """Copies `directory` into the spool as a new submission; returns its id. `private` (a shared
    spool, docs/shared-spool.md): the copy is staged under a dot-name in incoming/ itself (tmp/ is
    the workers'; dot-names are never claimed) and its top directory is 0700, so that no other user
    can open anything in it before the claim seals it for its submitter and the operators.
    `priority` goes into its `.ready` marker (watcher/priority.py), read from its submission.yaml
    when not given."""
    if not directory.is_dir():
        raise SubmitError(f"{directory} is not a directory")
    entry_id = entry_id or new_id()
    if not valid_id(entry_id):
        raise SubmitError(f"{entry_id!r} is not a valid id ([A-Za-z0-9][A-Za-z0-9_-]{{0,127}})")
    if locate(paths, entry_id) is not None:
        raise SubmitError(f"id {entry_id!r} is already in the spool")
    staging_dir, prefix = (paths.submissions.incoming, ".") if private else (paths.tmp, "")
    staging = staging_dir / f"{prefix}submit-{entry_id}-{secrets.token_hex(4)}"
    try:
        _copy_tree(directory, staging, mode=0o700 if private else 0o755)
        fd = os.open(staging / READY, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        lane = yaml_priority(directory / "submission.yaml") if priority is None else priority
        os.write(fd, json.dumps({"at": round(time.time(), 6), "priority": lane}).encode())
        os.fsync(fd)
        os.close(fd)
        fsync_dir(staging)
        try:
            os.rename(staging, paths.submissions.incoming / entry_id)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise SubmitError(f"id {entry_id!r} is already queued") from exc
            raise
        if not private:  # a shared spool's incoming/ (1730) cannot be opened for reading by its clients
            fsync_dir(paths.submissions.incoming)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return entry_id


@dataclass(frozen=True)
class Located:
    where: str  # "queued", "active", "done"
    path: Path


def locate(paths: SpoolPaths, entry_id: str) -> Located | None:
    subs = paths.submissions
    done = subs.done / entry_id
    if done.exists():
        return Located("done", done)
    prefix = entry_id + "."
    try:
        for entry in os.scandir(subs.active):
            parsed = split_active(entry.name)
            if entry.name.startswith(prefix) and parsed and parsed[0] == entry_id:
                return Located("active", Path(entry.path))
    except FileNotFoundError:
        pass
    queued = subs.incoming / entry_id
    if queued.exists():
        return Located("queued", queued)
    if done.exists():  # it moved from active/ to done/ while we looked
        return Located("done", done)
    return None


def stale_workers(paths: SpoolPaths) -> list[str]:
    """Live workers that run with another spool.yaml than the one there now (it changed since they
    started: they apply it when restarted)."""
    current = config_digest(paths.root)
    stale = []
    for path in paths.workers.glob("*.json"):
        try:
            heartbeat = Heartbeat.read(read_json(path))
            age = time.time() - path.stat().st_mtime
        except (OSError, ValueError, CutorError):
            continue
        if heartbeat is None or heartbeat.config is None or age > 3 * float(heartbeat.heartbeat_interval) + 5:
            continue
        if heartbeat.config != current:
            stale.append(heartbeat.worker)
    return sorted(stale)


def current_status(paths: SpoolPaths, entry_id: str) -> StatusDocument | None:
    """The submission's status.json, or a synthetic one while it is queued."""
    for _ in range(3):  # an entry can move between listing and reading
        found = locate(paths, entry_id)
        if found is None:
            return None
        status = read_status(found.path)
        if status is not None and (found.where != "queued"):
            return status
        if found.where == "queued":
            attempts = status.attempts if status is not None and status.attempts is not None else 0
            return StatusDocument(id=entry_id, state=State.QUEUED, outcome=None, attempts=attempts)
    return None


def events(paths: SpoolPaths, entry_id: str) -> list[dict[str, Any]]:
    found = locate(paths, entry_id)
    return read_lines(found.path / "result" / "events.jsonl") if found else []


def follow(
    paths: SpoolPaths,
    entry_id: str,
    *,
    timeout: float | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> StatusDocument | None:
    """Waits for the terminal status; calls `on_event` for each new event as it happens.
    Returns None on timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    seen = 0
    subs = paths.submissions
    with Waiter([subs.active, subs.done], poll=needs_polling(paths.root)) as waiter:
        while True:
            status = current_status(paths, entry_id)
            if on_event is not None:
                evs = events(paths, entry_id)
                for ev in evs[seen:]:
                    on_event(ev)
                seen = max(seen, len(evs))
            if status is not None and status.terminal:
                found = locate(paths, entry_id)
                if found is not None and found.where == "done":
                    return status
            if deadline is not None and time.monotonic() > deadline:
                return None
            waiter.wait(0.05 if on_event is not None else 0.2)


def listing(
    paths: SpoolPaths, *, limit: int = 50, keep: Callable[[dict[str, Any]], bool] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """What is queued, active and done (the `limit` latest done that `keep` keeps, newest first).
    Each row: id, state, and what the status says of it (worker; outcome, score, reason, ended)."""
    subs = paths.submissions
    keep = keep or (lambda _row: True)

    def names(directory: Path) -> Iterator[os.DirEntry[str]]:
        try:
            yield from (e for e in os.scandir(directory) if not e.name.startswith("."))
        except (FileNotFoundError, PermissionError):  # a shared spool's incoming/ is not listable
            return

    queued = [row for row in ({"id": e.name, "state": "queued"} for e in names(subs.incoming)) if keep(row)]
    active: list[dict[str, Any]] = []
    for e in names(subs.active):
        parsed = split_active(e.name)
        if parsed:
            status = read_status(Path(e.path))
            row: dict[str, Any] = {"id": parsed[0], "state": str(status.state) if status else "claimed"}
            row["worker"] = status.worker if status else None
            if keep(row):
                active.append(row)
    done: list[dict[str, Any]] = []
    for e in sorted(names(subs.done), key=_mtime, reverse=True):
        if len(done) >= limit:
            break
        row = _done_row(e.name, read_status(Path(e.path)))
        if keep(row):
            done.append(row)
    return {"queued": queued, "active": active, "done": done}


def _mtime(entry: os.DirEntry[str]) -> float:
    try:
        return entry.stat(follow_symlinks=False).st_mtime
    except FileNotFoundError:  # pruned or moved while listed
        return 0.0


def _done_row(entry_id: str, status: StatusDocument | None) -> dict[str, Any]:
    reason = None
    if status is not None:
        first = status.errors[0] if status.errors else None
        more = f" (and {len(status.errors or []) - 1} more)" if len(status.errors or []) > 1 else ""
        reason = status.reason or (f"{first.where}: {first.message}{more}" if first else None)
    return {
        "id": entry_id,
        "state": str(status.state) if status else None,
        "outcome": str(status.outcome) if status and status.outcome else None,
        "score": status.score if status else None,
        "max_score": status.max_score if status else None,
        "reason": reason,
        "ended": status.finished_at if status else None,
    }
