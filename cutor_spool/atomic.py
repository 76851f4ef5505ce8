"""Writes into the spool that a reader never sees half-done.

Every write opens its file by path at that moment and closes it: nothing holds a spool entry open,
because an entry keeps its inode when it is renamed, and a file kept open in a claim that has been
requeued would go on writing into the *next* claim. No write creates missing directories either:
if a claim's directory is gone (the lease was lost), the write fails with ENOENT, which is the
point.

Writes and reads inside a spool entry (a directory a client made) pass `beneath`, the spool's own
directory the entry lives in: every component below it is then opened without following a
symlink (`nofollow.py`), not just the last one.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cutor_spool.errors import LeaseLost, SpoolIOError
from cutor_spool.nofollow import opened_dir, relative


def fsync_dir(path: Path) -> None:
    """Makes a rename or create in `path` durable (the directory's own entry list)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _raise(path: Path, exc: OSError) -> None:
    if exc.errno == errno.ENOENT:
        raise LeaseLost(f"{path.parent} is gone") from exc
    raise SpoolIOError(f"cannot write {path}: {exc.strerror}") from exc


TEMPORARY_PREFIX = ".tmp-"  # write_bytes's temporaries: `.tmp-<name>-<random>`, beside the target


def _parent(path: Path, beneath: Path | None) -> tuple[Path, str]:
    """(anchor, the parent's path below it): where `path`'s directory is opened from."""
    if beneath is None:
        return path.parent, ""
    return beneath, relative(path.parent, beneath)


def write_bytes(path: Path, data: bytes, *, fsync: bool = True, beneath: Path | None = None) -> None:
    """Temporary file in the same directory, fsync, rename: the old version or the new, never half."""
    tmp = f"{TEMPORARY_PREFIX}{path.name}-{secrets.token_hex(4)}"
    try:
        with opened_dir(*_parent(path, beneath)) as parent:
            _write_in(parent, tmp, path.name, data, fsync)
    except OSError as exc:
        _raise(path, exc)


def _write_in(parent: int, tmp: str, name: str, data: bytes, fsync: bool) -> None:
    _write_temporary(parent, tmp, data, fsync)
    _place(parent, tmp, name, fsync=False)


def _write_temporary(parent: int, tmp: str, data: bytes, fsync: bool) -> None:
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644, dir_fd=parent)
    try:
        write_fd(fd, data)
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(parent, tmp)
        raise
    os.close(fd)


def _place(parent: int, tmp: str, name: str, fsync: bool) -> None:
    """Renames the temporary `tmp` to `name`, fsynced first if asked (when it was written
    without); removes it on any failure (a signal handler's exception too: no temporary is
    left behind)."""
    try:
        if fsync:
            fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.rename(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
    except BaseException:
        _unlink_quietly(parent, tmp)
        raise


def _unlink_quietly(parent: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=parent)
    except OSError:
        pass


def write_json(path: Path, value: Any, *, fsync: bool = True, beneath: Path | None = None) -> None:
    text = json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False) + "\n"
    write_bytes(path, text.encode(), fsync=fsync, beneath=beneath)


def write_json_in_two(path: Path, value: Any, *, beneath: Path | None = None) -> Callable[[], None]:
    """`write_json` in two steps: the temporary file is written now, and the step returned
    fsyncs it and renames it into place (in another thread, say, while the caller goes on).
    Until that step, readers see the old version; a crash before it leaves the old version."""
    text = json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False) + "\n"
    tmp = f"{TEMPORARY_PREFIX}{path.name}-{secrets.token_hex(4)}"
    where = _parent(path, beneath)
    try:
        with opened_dir(*where) as parent:
            _write_temporary(parent, tmp, text.encode(), fsync=False)
    except OSError as exc:
        _raise(path, exc)

    def finish() -> None:
        try:
            with opened_dir(*where) as parent:
                _place(parent, tmp, path.name, fsync=True)
        except OSError as exc:
            _raise(path, exc)

    return finish


def append_line(path: Path, value: Any, *, beneath: Path | None = None) -> None:
    """Appends one JSON line (O_APPEND, one write, closed at once). Lines under PIPE_BUF-ish sizes
    land whole; readers skip a torn last line left by a crash."""
    append_lines(path, [value], beneath=beneath)


def append_lines(path: Path, values: list[Any], *, beneath: Path | None = None) -> None:
    """`append_line` for several lines at once, in one write."""
    line = "".join(json.dumps(v, ensure_ascii=False, separators=(",", ":")) + "\n" for v in values).encode()
    try:
        fd = _open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, beneath)
    except OSError as exc:
        _raise(path, exc)
    try:
        os.write(fd, line)
    except OSError as exc:
        _raise(path, exc)
    finally:
        os.close(fd)


def _open_regular(path: Path, flags: int, beneath: Path | None = None) -> int:
    """Opens a file of the spool protocol: never through a symlink, never blocking on a FIFO, and
    only if it is a regular file. Entries come from clients; what they plant under names the
    spool uses must not make a root worker write elsewhere or hang."""
    with opened_dir(*_parent(path, beneath)) as parent:
        fd = os.open(path.name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644, dir_fd=parent)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{path} is not a regular file")
    return fd


def write_fd(fd: int, data: bytes) -> None:
    """All of `data` to `fd`: os.write may write less than it is given."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_fd(fd: int, limit: int) -> bytes:
    """Up to `limit + 1` bytes from `fd`: one byte more than allowed tells the caller it is over."""
    chunks = []
    remaining = limit + 1
    while remaining > 0:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_bytes(path: Path, limit: int = 64 << 20, *, beneath: Path | None = None) -> bytes:
    fd = _open_regular(path, os.O_RDONLY, beneath)
    try:
        data = read_fd(fd, limit)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"{path} is larger than {limit} bytes")
    return data


def read_json(path: Path, *, beneath: Path | None = None) -> Any:
    return json.loads(read_bytes(path, beneath=beneath))


def read_lines(path: Path, *, beneath: Path | None = None) -> list[Any]:
    """Reads a JSON-lines file, skipping a torn or garbled line instead of failing. A missing
    file, or anything that is not a regular file, reads as empty."""
    try:
        raw = read_bytes(path, beneath=beneath)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError:
        return []
    out = []
    for line in raw.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def clear_unless_regular(path: Path, *, beneath: Path | None = None) -> None:
    """Removes `path` unless it is absent or a regular file (a planted symlink, FIFO, device or
    directory under a name the spool writes). Symlinks are unlinked, never followed."""
    with opened_dir(*_parent(path, beneath)) as parent:
        try:
            st = os.lstat(path.name, dir_fd=parent)
        except (FileNotFoundError, NotADirectoryError):
            return
        if stat.S_ISREG(st.st_mode):
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path.name, dir_fd=parent)  # rmtree does not follow symlinks inside
        else:
            os.unlink(path.name, dir_fd=parent)


def make_dir(path: Path, *, beneath: Path | None = None) -> None:
    """Makes the directory `path` unless it is there (no parent is made, nor followed through a
    symlink below `beneath`)."""
    try:
        with opened_dir(*_parent(path, beneath)) as parent:
            try:
                os.mkdir(path.name, 0o755, dir_fd=parent)
            except FileExistsError:
                pass
    except OSError as exc:
        _raise(path, exc)


def set_aside(path: Path, suffix: str) -> Path | None:
    """Renames a client's entry that sits under a name the protocol needs to `<name>-foreign-…`,
    so that nothing is lost and validation can report it. None if there was nothing there."""
    if not os.path.lexists(path):
        return None
    target = path.with_name(f"{path.name}-foreign-{suffix}")
    os.rename(path, target)
    return target
