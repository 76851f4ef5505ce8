"""Reading spool entries for the page, as root, without following anything a submitter planted.

A submission is hostile from the moment it is dropped: a plain `cp -r` may bring a `result/` that
is a symlink, or a `result/run.json` pointing at `/etc/shadow`, and the page generator runs inside
a root worker. So every read here walks down from the entry's directory with `O_NOFOLLOW` at each
step (`openat` on directory descriptors), opens regular files only (`O_NONBLOCK`, so a FIFO cannot
block the worker), caps the bytes it reads, and turns every failure into "not there": the page
shows what exists and never stops at a broken entry. The spool's documents are parsed with their
models (`documents/`): one that does not fit its model is "not there" too.

Descriptors are opened and closed within one call: nothing holds a spool entry open (an entry
keeps its inode when renamed, see `atomic.py`).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cutor_spool.atomic import read_fd
from cutor_spool.documents.base import Document
from cutor_spool.documents.dependencies import DependenciesDocument
from cutor_spool.documents.stage import StageDocument
from cutor_spool.documents.status import StatusDocument

D = TypeVar("D", bound=Document)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

STATUS_LIMIT = 4 * 2**20  # status.json is small; anything bigger is not ours
STAGE_LIMIT = 32 * 2**20  # a stage JSON holds stdout, stderr and both interleaved (up to 3x output)
EVENTS_LIMIT = 4 * 2**20


@dataclass(frozen=True)
class TooLarge:
    """A file that exists but is over the read cap: the page says so instead of loading it."""

    size: int


@contextmanager
def open_dir(path: Path) -> Iterator[int | None]:
    """A descriptor of the directory at `path`, or None when it is missing, not a directory, or a
    symlink. (The path's parents are the spool's own directories.)"""
    with _opened(str(path), None) as fd:
        yield fd


@contextmanager
def open_subdir(dir_fd: int | None, name: str) -> Iterator[int | None]:
    """A descriptor of directory `name` inside `dir_fd`, never through a symlink; None if absent."""
    if dir_fd is None:
        yield None
        return
    with _opened(name, dir_fd) as fd:
        yield fd


@contextmanager
def _opened(path: str, dir_fd: int | None) -> Iterator[int | None]:
    try:
        fd = os.open(path, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError:
        yield None
        return
    try:
        yield fd
    finally:
        os.close(fd)


@contextmanager
def _regular(dir_fd: int | None, name: str) -> Iterator[tuple[int, os.stat_result] | None]:
    """The open descriptor and stat of a regular file `name` below `dir_fd` (no link followed, no
    FIFO waited on), or None: what every reader of the page opens its files through."""
    if dir_fd is None:
        yield None
        return
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError:
        yield None
        return
    try:
        try:
            st: os.stat_result | None = os.fstat(fd)
        except OSError:
            st = None
        yield (fd, st) if st is not None and stat.S_ISREG(st.st_mode) else None
    finally:
        os.close(fd)


def read_bytes(dir_fd: int | None, name: str, limit: int) -> bytes | TooLarge | None:
    with _regular(dir_fd, name) as found:
        if found is None:
            return None
        fd, st = found
        if st.st_size > limit:
            return TooLarge(st.st_size)
        try:
            data = read_fd(fd, limit)
        except OSError:
            return None
        return TooLarge(len(data)) if len(data) > limit else data


def read_json(dir_fd: int | None, name: str, limit: int) -> dict[str, Any] | TooLarge | None:
    """A JSON object, TooLarge, or None (missing, unreadable, not JSON, not an object)."""
    raw = read_bytes(dir_fd, name, limit)
    if raw is None or isinstance(raw, TooLarge):
        return raw
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def read_document(dir_fd: int | None, name: str, limit: int, model: type[D]) -> D | TooLarge | None:
    """A document of the spool, TooLarge, or None (missing, unreadable, or not that document)."""
    value = read_json(dir_fd, name, limit)
    if value is None or isinstance(value, TooLarge):
        return value
    return model.read(value)


def read_json_lines(dir_fd: int | None, name: str, limit: int, *, last: int) -> list[dict[str, Any]]:
    """The last `last` objects of a JSON-lines file; torn or garbled lines are skipped."""
    raw = read_bytes(dir_fd, name, limit)
    if raw is None or isinstance(raw, TooLarge):
        return []
    out = []
    for line in raw.splitlines()[-last:]:
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


def list_files(dir_fd: int | None, suffix: str) -> list[str]:
    """Names of regular files ending in `suffix` (dot-names, i.e. temporary files, skipped)."""
    if dir_fd is None:
        return []
    names = []
    try:
        with os.scandir(dir_fd) as it:
            for entry in it:
                if entry.name.startswith(".") or not entry.name.endswith(suffix):
                    continue
                if entry.is_file(follow_symlinks=False):
                    names.append(entry.name)
    except OSError:
        return []
    return names


def json_object(path: Path, limit: int) -> dict[str, Any] | None:
    """One small JSON object by path (heartbeat files, build records), the last component not
    followed if it is a symlink."""
    with open_dir(path.parent) as fd:
        value = read_json(fd, path.name, limit)
    return value if isinstance(value, dict) else None


Stage = StageDocument | DependenciesDocument


@dataclass(frozen=True)
class EntryFiles:
    """What a submission's worker wrote into its `result/`."""

    exists: bool
    status: StatusDocument | None
    stages: dict[str, Stage | TooLarge | None]
    tests: dict[str, StageDocument | TooLarge | None]
    events: list[dict[str, Any]]


def _stage(result_fd: int | None, name: str) -> Stage | TooLarge | None:
    model: type[Stage] = DependenciesDocument if name == "dependencies.json" else StageDocument
    return read_document(result_fd, name, STAGE_LIMIT, model)


def read_entry(path: Path, *, events: int = 200) -> EntryFiles:
    """`result/status.json`, every stage JSON next to it, `result/tests/*.json`, and the last
    `events` lines of `events.jsonl`, of the entry at `path`."""
    with open_dir(path) as entry_fd, open_subdir(entry_fd, "result") as result_fd:
        status = read_document(result_fd, "status.json", STATUS_LIMIT, StatusDocument)
        stages = {
            name[: -len(".json")]: _stage(result_fd, name)
            for name in list_files(result_fd, ".json")
            if name != "status.json"
        }
        with open_subdir(result_fd, "tests") as tests_fd:
            tests = {
                name[: -len(".json")]: read_document(tests_fd, name, STAGE_LIMIT, StageDocument)
                for name in list_files(tests_fd, ".json")
            }
        log = read_json_lines(result_fd, "events.jsonl", EVENTS_LIMIT, last=events)
        return EntryFiles(
            exists=entry_fd is not None,
            status=status if isinstance(status, StatusDocument) else None,
            stages=stages,
            tests=tests,
            events=log,
        )


LIVE_DIR = "live"  # result/live/<stage>.out: a running stage's output so far (the runner's side)
LIVE_OUT_SUFFIX = ".out"
LIVE_TAIL = 64 * 1024  # bytes of each, from the end, that a live page shows


@dataclass(frozen=True)
class LiveOutput:
    stage: str
    text: str
    skipped: int  # bytes before the part shown


def read_tail(dir_fd: int | None, name: str, limit: int) -> tuple[bytes, int] | None:
    """The last `limit` bytes of a regular file and how many came before them; None if absent."""
    with _regular(dir_fd, name) as found:
        if found is None:
            return None
        fd, st = found
        skipped = max(0, st.st_size - limit)
        try:
            os.lseek(fd, skipped, os.SEEK_SET)
            return read_fd(fd, limit)[:limit], skipped
        except OSError:
            return None


def read_live_output(path: Path) -> list[LiveOutput]:
    """`result/live/<stage>.out` of a running entry: what its stages printed so far, if the runner
    writes it. Read like the rest (no link followed, regular files only, the tail only)."""
    out = []
    with (
        open_dir(path) as entry_fd,
        open_subdir(entry_fd, "result") as result_fd,
        open_subdir(result_fd, LIVE_DIR) as live_fd,
    ):
        for name in sorted(list_files(live_fd, LIVE_OUT_SUFFIX)):
            found = read_tail(live_fd, name, LIVE_TAIL)
            if found is not None:
                data, skipped = found
                text = data.decode("utf-8", errors="replace")
                out.append(LiveOutput(name[: -len(LIVE_OUT_SUFFIX)], text, skipped))
    return out
