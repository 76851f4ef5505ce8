"""The spool's content-addressed store (`spool/cas/`, DESIGN section 9): immutable blobs named by
their IPFS CID.

A blob is written under a temporary name in the spool's `tmp/` while its CID is computed from the
same bytes, fsynced, then renamed into place: a reader sees a whole blob or none, and two writers of
the same bytes both succeed with the same result. A reader checks the bytes against the CID before
it hands out a byte, so a blob changed on disk (a bad sector, a hand that edited it) is never
served; it raises `BlobMismatch` instead.

Layout: `cas/<shard>/<cid>`, where the shard is the two characters before the CID's last one (as
IPFS's flatfs does with `next-to-last/2`): every CID here starts with "bafybei", so the end is
where they differ, and 1024 shards keep each directory small on NFS for millions of blobs.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from cutor_spool.atomic import fsync_dir, read_fd, write_fd
from cutor_spool.deployments.cid import READ_SIZE, BlockSink, DagBuilder, cid_of_bytes, parse_cid
from cutor_spool.deployments.errors import BlobMismatch, InvalidCid, UnknownCid
from cutor_spool.errors import SpoolIOError
from cutor_spool.layout import SpoolPaths

CAS_DIR = "cas"
_TEMPORARY_PREFIX = ".cas-"


def shard(cid: str) -> str:
    return cid[-3:-1]


class Store:
    def __init__(self, spool: Path) -> None:
        paths = SpoolPaths(spool)
        self.root = paths.root / CAS_DIR
        self.tmp = paths.tmp

    def path(self, cid: str) -> Path:
        parse_cid(cid)  # a CID is the only name a caller may give: never a path of its own
        return self.root / shard(cid) / cid

    # -- writing

    def put(self, source: bytes | BinaryIO | Path) -> str:
        """Stores a blob (bytes, a binary stream, or a file) and returns its CID."""
        if isinstance(source, Path):
            with source.open("rb") as stream:
                return self._put_stream(stream)
        if isinstance(source, bytes):
            return self._put_chunks(iter([source]))
        return self._put_stream(source)

    def _put_stream(self, stream: BinaryIO) -> str:
        return self._put_chunks(iter(lambda: stream.read(READ_SIZE), b""))

    def _put_chunks(self, chunks: Iterator[bytes]) -> str:
        tmp = self.tmp / f"{_TEMPORARY_PREFIX}{secrets.token_hex(8)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise SpoolIOError(f"cannot write into {self.tmp}: {exc.strerror} (is the spool initialised?)") from exc
        try:
            builder = DagBuilder()
            try:
                for chunk in chunks:
                    builder.update(chunk)
                    write_fd(fd, chunk)
                os.fchmod(fd, 0o444)  # immutable: a blob is only ever replaced by the same bytes
                os.fsync(fd)
            finally:
                os.close(fd)
            cid = builder.finish()
            target = self.path(cid)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(tmp, target)
            fsync_dir(target.parent)
            return cid
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, OSError):
                raise SpoolIOError(f"cannot store a blob in {self.root}: {exc.strerror}") from exc
            raise

    # -- reading

    def has(self, cid: str) -> bool:
        return os.path.lexists(self.path(cid))

    def ls(self) -> list[str]:
        """Every stored CID, sorted. Temporaries and foreign names are not blobs."""
        if not self.root.is_dir():
            return []
        found = []
        for directory in self.root.iterdir():
            if not directory.is_dir() or directory.is_symlink():
                continue
            for entry in directory.iterdir():
                if shard(entry.name) == directory.name and _is_cid(entry.name):
                    found.append(entry.name)
        return sorted(found)

    def get(self, cid: str, *, limit: int = 256 << 20) -> bytes:
        """The blob's bytes, checked against its CID first; `limit` keeps a huge blob out of memory
        (stream those with `copy_to`)."""
        with self._open(cid) as fd:
            data = read_fd(fd, limit)
        if len(data) > limit:
            raise SpoolIOError(f"{cid}: larger than {limit} bytes; copy it to a file instead")
        actual = cid_of_bytes(data)
        if actual != cid:
            raise _mismatch(cid, actual, self.path(cid))
        return data

    def verify(self, cid: str, sink: BlockSink | None = None) -> None:
        """Reads the whole blob and raises `BlobMismatch` unless it hashes to `cid`; `sink` gets
        its DAG's blocks on the way (the root last)."""
        builder = DagBuilder(sink)
        with self._open(cid) as fd:
            while chunk := os.read(fd, READ_SIZE):
                builder.update(chunk)
        actual = builder.finish()
        if actual != cid:
            raise _mismatch(cid, actual, self.path(cid))

    def copy_to(self, cid: str, destination: Path) -> None:
        """Writes the blob to `destination` only if it matches its CID: through a temporary file
        beside it, renamed into place after the check; a mismatch leaves nothing behind."""
        tmp = destination.with_name(f".{destination.name}.{secrets.token_hex(4)}")
        builder = DagBuilder()
        try:
            with self._open(cid) as fd, tmp.open("xb") as out:
                while chunk := os.read(fd, READ_SIZE):
                    builder.update(chunk)
                    out.write(chunk)
            actual = builder.finish()
            if actual != cid:
                raise _mismatch(cid, actual, self.path(cid))
            os.replace(tmp, destination)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    @contextlib.contextmanager
    def _open(self, cid: str) -> Iterator[int]:
        path = self.path(cid)
        try:
            # No symlink, no FIFO: whatever a client planted under a CID's name, a reader must not
            # follow it elsewhere or hang on it.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise UnknownCid(f"{cid}: not in the store ({self.root})") from None
        except OSError as exc:
            raise BlobMismatch(f"{cid}: {path} is not a blob ({exc.strerror}); never served") from exc
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise BlobMismatch(f"{cid}: {path} is not a regular file; never served")
            yield fd
        finally:
            os.close(fd)


def _is_cid(name: str) -> bool:
    try:
        parse_cid(name)
    except InvalidCid:
        return False
    return True


def _mismatch(cid: str, actual: str, path: Path) -> BlobMismatch:
    return BlobMismatch(
        f"{cid}: the stored bytes are those of {actual}, not of their name; never served"
        f" (remove {path} and put the original blob again)"
    )
