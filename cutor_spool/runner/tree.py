"""The files of a submission directory: walked without following anything, copied defensively.

A submission is hostile from the moment it is dropped. The walk uses `lstat` only and reports
symlinks, FIFOs, sockets and devices as problems instead of touching them. The copy into the
sandbox's work directory re-checks every file it opens (`O_NOFOLLOW | O_NONBLOCK`, then `fstat`),
because a client may still hold the directory open and swap an entry after it was checked.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cutor_spool.atomic import read_fd

# Names at the top of a spool entry that belong to the spool protocol, not to the submission.
PROTOCOL_NAMES = frozenset({".ready", ".lease", "result"})
# What a claim sets aside when a client put something of its own under a protocol name.
RESERVED_PREFIXES = (".lease-foreign-", "result-foreign-")
MAX_DEPTH = 32


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a submission; `where` is a field path or `file NAME`."""

    where: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"where": self.where, "message": self.message}

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True)
class TreeFile:
    name: str  # relative, '/'-separated
    size: int
    executable: bool


@dataclass(frozen=True)
class Tree:
    files: dict[str, TreeFile]
    dirs: frozenset[str]
    total_size: int


def _display(name: str) -> str:
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def _kind(mode: int) -> str | None:
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    if stat.S_ISFIFO(mode):
        return "is a FIFO"
    if stat.S_ISSOCK(mode):
        return "is a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device file"
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return "is not a regular file"
    return None


def walk(root: Path, *, max_files: int, max_size: int, problems: list[Problem]) -> Tree:
    """Lists the regular files under `root` (protocol names at the top excluded); every other kind
    of entry, bad name, or excess becomes a problem."""
    files: dict[str, TreeFile] = {}
    dirs: set[str] = set()
    total = 0
    pending: list[tuple[str, int]] = [("", 0)]
    while pending:
        prefix, depth = pending.pop()
        try:
            entries = sorted(os.scandir(root / prefix if prefix else root), key=lambda e: e.name)
        except OSError as exc:
            problems.append(Problem(f"file {_display(prefix) or '.'}", f"cannot be read: {exc.strerror}"))
            continue
        for entry in entries:
            name = f"{prefix}/{entry.name}" if prefix else entry.name
            if not prefix and entry.name in PROTOCOL_NAMES:
                continue
            where = f"file {_display(name)}"
            if not prefix and entry.name.startswith(RESERVED_PREFIXES):
                original = entry.name.partition("-foreign-")[0]
                problems.append(
                    Problem(
                        f"file {_display(original)}",
                        f"{original!r} is reserved for the spool "
                        "(its lease and its results); the submission's own was kept aside",
                    )
                )
                continue
            try:
                entry.name.encode("utf-8")
            except UnicodeEncodeError:
                problems.append(Problem(where, "has a name that is not valid UTF-8"))
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as exc:
                problems.append(Problem(where, f"cannot be read: {exc.strerror}"))
                continue
            kind = _kind(st.st_mode)
            if kind:
                problems.append(Problem(where, f"{kind}; a submission holds only regular files and directories"))
                continue
            if stat.S_ISDIR(st.st_mode):
                if depth + 1 >= MAX_DEPTH:
                    problems.append(Problem(where, f"is nested deeper than {MAX_DEPTH} directories"))
                    continue
                dirs.add(name)
                pending.append((name, depth + 1))
                continue
            if len(files) >= max_files:
                problems.append(Problem(where, f"is past the limit of {max_files} files"))
                return Tree(files, frozenset(dirs), total)
            total += st.st_size
            if total > max_size:
                problems.append(Problem(where, f"brings the submission past its size limit of {max_size} bytes"))
                return Tree(files, frozenset(dirs), total)
            files[name] = TreeFile(name, st.st_size, bool(st.st_mode & 0o111))
    return Tree(files, frozenset(dirs), total)


def read_file(root: Path, name: str, limit: int) -> bytes:
    """Reads one file of the submission, refusing anything that is not (any more) a regular file."""
    fd = os.open(root / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{name} is not a regular file")
        data = read_fd(fd, limit)
        if len(data) > limit:
            raise OSError(f"{name} grew past {limit} bytes")
        return data
    finally:
        os.close(fd)


def _ensure_dir(dest: Path, rel: str, uid: int, gid: int) -> None:
    path = dest
    for part in rel.split("/"):
        path = path / part
        try:
            os.mkdir(path, 0o755)
            os.chown(path, uid, gid)
        except FileExistsError:
            if not path.is_dir() or path.is_symlink():
                raise OSError(f"{rel} collides with a file") from None


def place(dest: Path, name: str, data: bytes, *, executable: bool, uid: int, gid: int) -> None:
    """Writes one file into the work directory, owned by the slot's uid."""
    parent, _, _ = name.rpartition("/")
    if parent:
        _ensure_dir(dest, parent, uid, gid)
    mode = 0o755 if executable else 0o644
    fd = os.open(dest / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def copy_file(src_root: Path, name: str, dest: Path, *, size_limit: int, executable: bool, uid: int, gid: int) -> None:
    place(dest, name, read_file(src_root, name, size_limit), executable=executable, uid=uid, gid=gid)


def make_dirs(dest: Path, names: frozenset[str], uid: int, gid: int) -> None:
    for name in sorted(names):
        _ensure_dir(dest, name, uid, gid)
