"""Bundles: a directory as a deterministic zip (same files, same bytes, same CID), and back.

`pack` makes the zip that `deploy` stores as a deployment's bundle and that an executor stores as a
deployment's compiled work area. Its bytes depend on the files' relative names, contents and
owner-exec bits only:

- one entry per regular file, sorted by name (UTF-8 order), no directory entries (a directory
  exists in the bundle because a file is in it; an empty directory is not kept);
- every entry stored (no compression: deflate's bytes depend on the zlib build, and the same files
  must give the same CID on every host), dated 1980-01-01 00:00:00 (the zip format's first day),
  made on "Unix" with mode 0644, or 0755 when the file's owner-exec bit is set, no extra fields, no
  comments; a name that is not ASCII has the zip's UTF-8 flag, as every zip writer sets it.

Refused, each listed: symbolic links, FIFOs, sockets and devices, files with more than one hard
link, names that are not valid UTF-8 or hold a backslash or a control character, files above the
size limit, too many files or bytes in all. Nothing is followed: every directory and file is
opened from its parent's descriptor with O_NOFOLLOW, so that `pack` may read a work area that a job
controlled.

`unpack` materialises a bundle (or a work area) into a directory, trusting nothing in the zip:
names are checked as `pack` checks them (no absolute name, no `..`, no backslash), symlinks and
other non-regular entries are refused, the number of files and the declared and actual sizes are
held to the caller's maxima (a zip bomb stops at the limit), modes come from the owner-exec bit
only, and every file and directory made is owned by the given uid and gid.
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
import zlib
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from cutor_spool.atomic import write_fd
from cutor_spool.deployments.errors import BundleError
from cutor_spool.nofollow import DIR_FLAGS

EPOCH = (1980, 1, 1, 0, 0, 0)
UNIX = 3  # the zip format's "made by" system whose external attributes carry a Unix mode
MAX_FILES = 10_000
MAX_BYTES = 256 << 20  # the store reads blobs up to this size into memory
MAX_FILE_SIZE = MAX_BYTES
MAX_NAME = 4096
MAX_DEPTH = 64  # directories below the top: a bound on the walk's recursion and open descriptors
_CHUNK = 1 << 20


def name_problem(name: str) -> str | None:
    """Why `name` is not a bundle's file name (None: it is one). A name is relative, '/'-separated,
    valid UTF-8, without `.`, `..` or empty components, backslashes or control characters."""
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return f"{_shown(name)}: the name is not valid UTF-8"
    if not name:
        return "an empty name"
    if name.startswith("/"):
        return f"{_shown(name)}: an absolute name"
    if "\\" in name or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return f"{_shown(name)}: a backslash or a control character in the name"
    parts = name.split("/")
    if ".." in parts:
        return f"{_shown(name)}: the name climbs out of the directory (..)"
    if any(p in ("", ".") for p in parts):
        return f"{_shown(name)}: an empty or '.' component in the name"
    if len(encoded) > MAX_NAME or any(len(p.encode()) > 255 for p in parts):
        return f"{_shown(name)}: the name is too long"
    if len(parts) > MAX_DEPTH:
        return f"{_shown(name)}: nested deeper than {MAX_DEPTH} directories"
    return None


def _shown(name: str) -> str:
    return repr(name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))


# -- pack


@dataclass
class _Packing:
    skip: frozenset[str]
    max_files: int
    max_bytes: int
    max_file_size: int
    files: dict[str, tuple[bytes, bool]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    total: int = 0
    dirs: int = 0
    full: bool = False

    def directory(self, fd: int, prefix: str) -> None:
        try:
            entries = sorted(os.scandir(fd), key=lambda e: e.name)
        except OSError as exc:
            self.problems.append(f"{_shown(prefix or '.')}: cannot be read ({exc.strerror})")
            return
        for entry in entries:
            name = f"{prefix}/{entry.name}" if prefix else entry.name
            if name in self.skip:
                continue
            self.entry(fd, entry, name)

    def entry(self, parent: int, entry: os.DirEntry[str], name: str) -> None:
        problem = name_problem(name)
        if problem is not None:
            self.problems.append(problem)
            return
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError as exc:
            self.problems.append(f"{_shown(name)}: cannot be read ({exc.strerror})")
            return
        if stat.S_ISDIR(st.st_mode):
            if name.count("/") >= MAX_DEPTH - 1:
                self.problems.append(f"{_shown(name)}: nested deeper than {MAX_DEPTH} directories")
                return
            self.dirs += 1
            if self.over(self.dirs > self.max_files, f"more than {self.max_files} directories"):
                return
            try:
                inner = os.open(entry.name, DIR_FLAGS, dir_fd=parent)
            except OSError as exc:
                self.problems.append(f"{_shown(name)}: cannot be read ({exc.strerror})")
                return
            try:
                self.directory(inner, name)
            finally:
                os.close(inner)
            return
        kind = _refused_kind(st)
        if kind is not None:
            self.problems.append(f"{_shown(name)}: {kind}")
            return
        self.regular(parent, entry.name, name, st)

    def regular(self, parent: int, base: str, name: str, st: os.stat_result) -> None:
        if st.st_size > self.max_file_size:
            self.problems.append(f"{_shown(name)}: {st.st_size} bytes, above the limit of {self.max_file_size}")
            return
        if self.over(len(self.files) >= self.max_files, f"more than {self.max_files} files"):
            return
        if self.over(self.total + st.st_size > self.max_bytes, f"more than {self.max_bytes} bytes in all"):
            return
        try:
            fd = os.open(base, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent)
        except OSError as exc:
            self.problems.append(f"{_shown(name)}: cannot be read ({exc.strerror})")
            return
        try:
            now = os.fstat(fd)
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(now.st_mode):
                self.problems.append(f"{_shown(name)}: changed while it was packed")
                return
            data = _read_at_most(fd, self.max_file_size)
        finally:
            os.close(fd)
        if len(data) > self.max_file_size:
            self.problems.append(f"{_shown(name)}: above the limit of {self.max_file_size} bytes")
            return
        self.add(name, data, bool(st.st_mode & stat.S_IXUSR))

    def over(self, condition: bool, problem: str) -> bool:
        """Whether the bundle is full: reported once, and no later file is read."""
        if condition and not self.full:
            self.full = True
            self.problems.append(problem)
        return self.full

    def add(self, name: str, data: bytes, executable: bool) -> None:
        if self.over(len(self.files) >= self.max_files, f"more than {self.max_files} files"):
            return
        if self.over(self.total + len(data) > self.max_bytes, f"more than {self.max_bytes} bytes in all"):
            return
        self.total += len(data)
        self.files[name] = (data, executable)


def _refused_kind(st: os.stat_result) -> str | None:
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link (a bundle holds regular files only)"
    if not stat.S_ISREG(st.st_mode):
        return "a FIFO, socket or device (a bundle holds regular files only)"
    if st.st_nlink > 1:
        return f"has {st.st_nlink} hard links (a bundle holds the directory's own copies only)"
    return None


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks = []
    size = 0
    while size <= limit and (chunk := os.read(fd, min(_CHUNK, limit + 1 - size))):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def pack(
    directory: Path,
    *,
    skip: Collection[str] = (),
    extra: Mapping[str, tuple[bytes, bool]] | None = None,
    max_files: int = MAX_FILES,
    max_bytes: int = MAX_BYTES,
    max_file_size: int = MAX_FILE_SIZE,
) -> bytes:
    """The deterministic zip of `directory`'s regular files. `skip`: relative names left out (a
    directory's name leaves out all below it); `extra`: more files, name -> (bytes, executable),
    which must not collide with the directory's. BundleError lists every problem found."""
    packing = _Packing(frozenset(skip), max_files, max_bytes, max_file_size)
    try:
        top = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise BundleError([f"{directory}: cannot be read ({exc.strerror})"]) from None
    try:
        packing.directory(top, "")
    finally:
        os.close(top)
    for name, (data, executable) in sorted((extra or {}).items()):
        problem = name_problem(name)
        if problem is not None:
            packing.problems.append(problem)
        elif name in packing.files or any(name.startswith(f"{n}/") or n.startswith(f"{name}/") for n in packing.files):
            packing.problems.append(f"{_shown(name)}: given twice (an inline file and a file of the directory)")
        else:
            packing.add(name, data, executable)
    if packing.problems:
        raise BundleError(packing.problems)
    return zip_files(packing.files)


def zip_files(files: Mapping[str, tuple[bytes, bool]]) -> bytes:
    """The deterministic zip of name -> (bytes, executable); the names must be valid already."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED, allowZip64=False) as archive:
        for name in sorted(files):
            data, executable = files[name]
            info = zipfile.ZipInfo(name, date_time=EPOCH)
            info.create_system = UNIX
            info.external_attr = (stat.S_IFREG | (0o755 if executable else 0o644)) << 16
            info.compress_type = zipfile.ZIP_STORED
            archive.writestr(info, data)
    return buffer.getvalue()


# -- unpack


@contextmanager
def _opened(source: bytes | Path) -> Iterator[zipfile.ZipFile]:
    stream: BinaryIO = io.BytesIO(source) if isinstance(source, bytes) else source.open("rb")
    try:
        try:
            archive = zipfile.ZipFile(stream)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise BundleError([f"not a zip file: {exc}"]) from None
        with archive:
            yield archive
    finally:
        stream.close()


@dataclass(frozen=True)
class _Entry:
    info: zipfile.ZipInfo
    name: str
    is_dir: bool
    executable: bool


def _entries(archive: zipfile.ZipFile, max_files: int, max_bytes: int) -> list[_Entry]:
    infos = archive.infolist()
    if len(infos) > max_files:
        raise BundleError([f"{len(infos)} entries, more than the limit of {max_files}"])
    entries: list[_Entry] = []
    declared = 0
    for info in infos:
        entry = _entry(info)
        if not entry.is_dir:
            declared += info.file_size
        if declared > max_bytes:
            raise BundleError([f"the files declare more than the limit of {max_bytes} bytes"])
        entries.append(entry)
    files = {e.name for e in entries if not e.is_dir}
    dirs = {e.name for e in entries if e.is_dir}
    seen: set[str] = set()
    for entry in entries:
        if entry.name in seen:
            raise BundleError([f"{_shown(entry.name)}: given twice"])
        seen.add(entry.name)
        parents = ["/".join(entry.name.split("/")[:i]) for i in range(1, entry.name.count("/") + 1)]
        if any(p in files for p in parents) or (not entry.is_dir and entry.name in dirs):
            raise BundleError([f"{_shown(entry.name)}: a file and a directory of the same name"])
    return entries


def _entry(info: zipfile.ZipInfo) -> _Entry:
    raw = info.filename
    is_dir = raw.endswith("/")
    name = raw[:-1] if is_dir else raw
    problem = name_problem(name)
    if problem is not None:
        raise BundleError([problem])
    if info.flag_bits & 0x1:
        raise BundleError([f"{_shown(name)}: encrypted"])
    mode = info.external_attr >> 16 if info.create_system == UNIX else 0
    kind = stat.S_IFMT(mode)
    if is_dir:
        if kind not in (0, stat.S_IFDIR):
            raise BundleError([f"{_shown(raw)}: a directory entry of another kind"])
    elif kind == stat.S_IFLNK:
        raise BundleError([f"{_shown(name)}: a symbolic link (a bundle holds regular files only)"])
    elif kind not in (0, stat.S_IFREG):
        raise BundleError([f"{_shown(name)}: not a regular file (mode {mode:o})"])
    return _Entry(info, name, is_dir, bool(mode & stat.S_IXUSR) and not is_dir)


def unpack(source: bytes | Path, dest: Path, *, uid: int, gid: int, max_files: int, max_bytes: int) -> None:
    """Writes the zip's files into the existing directory `dest`, owned by `uid`:`gid`, each
    0644 or 0755 (its owner-exec bit), directories 0755. Nothing in `dest` is replaced or followed.
    BundleError at the first problem; `dest` may then hold part of the files: the caller discards
    it."""
    with _opened(source) as archive:
        entries = _entries(archive, max_files, max_bytes)
        written = 0
        top = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for entry in entries:
                parts = entry.name.split("/")
                if entry.is_dir:
                    os.close(_make_dirs(top, parts, uid, gid))
                    continue
                parent = _make_dirs(top, parts[:-1], uid, gid)
                try:
                    written += _write_file(archive, entry, parent, parts[-1], uid, gid, max_bytes - written)
                finally:
                    os.close(parent)
        finally:
            os.close(top)


def _make_dirs(top: int, parts: list[str], uid: int, gid: int) -> int:
    """A descriptor of the directory `parts` below `top`, made (0755, uid:gid) where missing."""
    fd = os.dup(top)
    try:
        for part in parts:
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
                made = True
            except FileExistsError:
                made = False
            try:
                inner = os.open(part, DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise BundleError([f"{_shown('/'.join(parts))}: cannot make the directory ({exc.strerror})"]) from None
            os.close(fd)
            fd = inner
            if made:
                os.fchmod(fd, 0o755)
                os.fchown(fd, uid, gid)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_file(archive: zipfile.ZipFile, entry: _Entry, parent: int, base: str, uid: int, gid: int, room: int) -> int:
    declared = entry.info.file_size
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(base, flags, 0o600, dir_fd=parent)
    except OSError as exc:
        raise BundleError([f"{_shown(entry.name)}: cannot be written ({exc.strerror})"]) from None
    size = 0
    try:
        with archive.open(entry.info) as stream:
            while chunk := stream.read(_CHUNK):
                size += len(chunk)
                if size > declared or size > room:
                    raise BundleError([f"{_shown(entry.name)}: more bytes than it declares ({declared})"])
                write_fd(fd, chunk)
        if size != declared:
            raise BundleError([f"{_shown(entry.name)}: {size} bytes, not the {declared} it declares"])
        os.fchmod(fd, 0o755 if entry.executable else 0o644)
        os.fchown(fd, uid, gid)
    except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError, RuntimeError, ValueError) as exc:
        raise BundleError([f"{_shown(entry.name)}: cannot be read from the zip ({exc})"]) from None
    finally:
        os.close(fd)
    return size
