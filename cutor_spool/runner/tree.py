"""The files of a submission directory: walked without following anything, copied defensively.

A submission is hostile from the moment it is dropped. The walk uses `lstat` only and reports
symlinks, FIFOs, sockets and devices as problems instead of touching them. Every directory is
opened from its parent's descriptor without following a symlink, and so is every file read
(`nofollow.py`): `d/secret` is never read through a `d` the client turned into a symlink. Each file
read is re-checked on its descriptor (a regular file, one link), because a client may have kept a
descriptor of its own and changed what it could before the claim took the entry from it.

A root worker must not read for a client what the client could not read itself. A hard link
(`st_nlink > 1`) may reach any file of the same filesystem where the kernel's
`protected_hardlinks` is off, so a linked file is refused; so is a file its submitter (the uid
recorded at the claim) could not read: one owned by another uid without read permission for it. A
directory on another filesystem (a FUSE mount the client made) is refused as well: its contents are
whatever its owner's daemon says, at the pace it likes.
"""

from __future__ import annotations

import os
import pwd
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from cutor_spool.atomic import read_fd, write_fd
from cutor_spool.nofollow import DIR_FLAGS, open_beneath, opened_dir

# A rerun's link to the submission it runs again (`cutor-spool rerun`): that one's id.
RERUN_OF = ".rerun-of"
# Names at the top of a spool entry that belong to the spool protocol, not to the submission.
PROTOCOL_NAMES = frozenset({".ready", ".lease", "result", RERUN_OF})
# What a claim sets aside when a client put something of its own under a protocol name.
RESERVED_PREFIXES = (".lease-foreign-", "result-foreign-")
MAX_DEPTH = 32
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


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


class Reader:
    """Who the files are read for: refuses what `uid` could not read itself (None: no one in
    particular, as for the spool's own uid)."""

    def __init__(self, uid: int | None) -> None:
        self.uid = None if uid in (None, os.geteuid(), 0) else uid
        self.groups: frozenset[int] = frozenset()
        if self.uid is not None:
            try:
                user = pwd.getpwuid(self.uid)
                self.groups = frozenset(os.getgrouplist(user.pw_name, user.pw_gid))
            except KeyError:  # a uid without a name here (NFS): no group is known to be its
                pass

    def refusal(self, st: os.stat_result) -> str | None:
        if st.st_nlink > 1:
            return (
                f"has {st.st_nlink} hard links: a submission's files must be its own copies "
                "(a hard link can reach a file its submitter may not read)"
            )
        if self.uid is None or st.st_uid == self.uid:
            return None
        bit = stat.S_IRGRP if st.st_gid in self.groups else stat.S_IROTH
        if st.st_mode & bit:
            return None
        return f"is owned by uid {st.st_uid} and not readable by its submitter (uid {self.uid})"


def walk(root: Path, *, max_files: int, max_size: int, problems: list[Problem], submitter: int | None = None) -> Tree:
    """Lists the regular files under `root` (protocol names at the top excluded); every other kind
    of entry, bad name, or excess becomes a problem."""
    found = _Walk(max_files, max_size, problems, Reader(submitter))
    with opened_dir(root.parent, root.name) as top:
        found.directory(top, "", 0, os.fstat(top).st_dev)
    return Tree(found.files, frozenset(found.dirs), found.total)


@dataclass
class _Walk:
    max_files: int
    max_size: int
    problems: list[Problem]
    reader: Reader
    total: int = 0
    full: bool = False

    def __post_init__(self) -> None:
        self.files: dict[str, TreeFile] = {}
        self.dirs: set[str] = set()

    def directory(self, fd: int, prefix: str, depth: int, device: int) -> None:
        try:
            entries = sorted(os.scandir(fd), key=lambda e: e.name)
        except OSError as exc:
            self.problems.append(Problem(f"file {_display(prefix) or '.'}", f"cannot be read: {exc.strerror}"))
            return
        for entry in entries:
            if self.full:
                return
            name = f"{prefix}/{entry.name}" if prefix else entry.name
            if not prefix and entry.name in PROTOCOL_NAMES:
                continue
            self.entry(fd, entry, name, depth, device)

    def entry(self, parent: int, entry: os.DirEntry[str], name: str, depth: int, device: int) -> None:
        where = f"file {_display(name)}"
        if "/" not in name and entry.name.startswith(RESERVED_PREFIXES):
            original = entry.name.partition("-foreign-")[0]
            self.problems.append(
                Problem(
                    f"file {_display(original)}",
                    f"{original!r} is reserved for the spool "
                    "(its lease and its results); the submission's own was kept aside",
                )
            )
            return
        try:
            entry.name.encode("utf-8")
        except UnicodeEncodeError:
            self.problems.append(Problem(where, "has a name that is not valid UTF-8"))
            return
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError as exc:
            self.problems.append(Problem(where, f"cannot be read: {exc.strerror}"))
            return
        kind = _kind(st.st_mode)
        if kind:
            self.problems.append(Problem(where, f"{kind}; a submission holds only regular files and directories"))
        elif stat.S_ISDIR(st.st_mode):
            self.subdirectory(parent, entry.name, name, depth, device)
        else:
            self.file(st, name, where)

    def subdirectory(self, parent: int, base: str, name: str, depth: int, device: int) -> None:
        where = f"file {_display(name)}"
        if depth + 1 >= MAX_DEPTH:
            self.problems.append(Problem(where, f"is nested deeper than {MAX_DEPTH} directories"))
            return
        try:
            fd = os.open(base, DIR_FLAGS, dir_fd=parent)
        except OSError as exc:
            self.problems.append(Problem(where, f"cannot be read: {exc.strerror}"))
            return
        try:
            if os.fstat(fd).st_dev != device:
                self.problems.append(Problem(where, "is a mount point; a submission is one directory tree"))
                return
            self.dirs.add(name)
            self.directory(fd, name, depth + 1, device)
        finally:
            os.close(fd)

    def file(self, st: os.stat_result, name: str, where: str) -> None:
        refusal = self.reader.refusal(st)
        if refusal:
            self.problems.append(Problem(where, refusal))
            return
        if len(self.files) >= self.max_files:
            self.problems.append(Problem(where, f"is past the limit of {self.max_files} files"))
            self.full = True
            return
        self.total += st.st_size
        if self.total > self.max_size:
            self.problems.append(Problem(where, f"brings the submission past its size limit of {self.max_size} bytes"))
            self.full = True
            return
        self.files[name] = TreeFile(name, st.st_size, bool(st.st_mode & 0o111))


def read_file(root: Path, name: str, limit: int) -> bytes:
    """Reads one file of the submission, refusing anything that is not (any more) a regular file
    of one link. No component of `name`, nor `root` itself, is followed through a symlink."""
    fd = open_beneath(root.parent, f"{root.name}/{name}", os.O_RDONLY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{name} is not a regular file")
        if st.st_nlink > 1:
            raise OSError(f"{name} has {st.st_nlink} hard links")
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
        write_fd(fd, data)
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def copy_file(src_root: Path, name: str, dest: Path, *, size_limit: int, executable: bool, uid: int, gid: int) -> None:
    place(dest, name, read_file(src_root, name, size_limit), executable=executable, uid=uid, gid=gid)


def make_dirs(dest: Path, names: frozenset[str], uid: int, gid: int) -> None:
    for name in sorted(names):
        _ensure_dir(dest, name, uid, gid)


def rerun_link(entry: Path) -> str | None:
    """The id in the entry's `.rerun-of` (see RERUN_OF), when it holds one; a missing, odd or
    oversized file is no link (the rerun runs all the same)."""
    try:
        fd = open_beneath(entry, RERUN_OF, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        text = read_fd(fd, 200).decode("ascii", errors="replace").strip()
    finally:
        os.close(fd)
    return text if _ID.fullmatch(text) else None
