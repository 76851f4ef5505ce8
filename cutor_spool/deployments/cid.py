"""IPFS content ids for blobs, computed here so that the store needs no IPFS daemon.

A blob's id is the one Debian's `ipfs_cid` prints as CIDv1: the root of the UnixFS DAG that `ipfs
add` builds with its defaults (256 KiB fixed-size chunks, no raw leaves, a balanced DAG of at most
174 links per node, sha2-256), written as CIDv1 dag-pb in lowercase base32 ("bafybei…"). Inside
the DAG the links are CIDv0 (a bare multihash), as `ipfs add` writes them; only the root is named
in CIDv1. Publishing the blob's blocks (`car.export`, then `ipfs dag import`) makes it findable
under the same id. (`ipfs add --cid-version=1 --raw-leaves=false` writes CIDv1 links too, so for
blobs over one chunk its id differs; `ipfs add` with no options gives the CIDv0 of this very id.)

The two protobuf messages (dag-pb's PBNode/PBLink and UnixFS's Data) are encoded by hand: each is
a handful of fields, and the bytes must be exactly those of go-ipfs's encoder (dag-pb writes Links,
field 2, before Data, field 1; a link carries an empty Name; UnixFS always writes filesize and one
`blocksizes` entry per child, unpacked), which a generic protobuf library does not promise. The
encoder streams: `DagBuilder` holds one chunk and at most 174 links per level of the tree, so the
id of a multi-GiB file costs a few hundred KiB of memory.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO, NamedTuple

from cutor_spool.deployments.errors import InvalidCid

CHUNK_SIZE = 256 * 1024  # go-ipfs's default chunker: size-262144
MAX_LINKS = 174  # go-unixfs's DefaultLinksPerBlock for the balanced layout

SHA2_256 = 0x12
DAG_PB = 0x70
CID_V1 = 0x01
_DIGEST_SIZE = 32
_V1_PREFIX = bytes([CID_V1, DAG_PB, SHA2_256, _DIGEST_SIZE])
_UNIXFS_FILE = 2

# "bafybei" is what every CIDv1 of a dag-pb sha2-256 node starts with in base32; 59 characters.
_CID_TEXT = re.compile(r"bafybei[a-z2-7]{52}")

BlockSink = Callable[[bytes, bytes], object]
"""Receives each block of a DAG as it is made: (its multihash, its bytes)."""


def varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def _int_field(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def multihash(block: bytes) -> bytes:
    """sha2-256 multihash of `block`: also its CIDv0 in binary."""
    return bytes([SHA2_256, _DIGEST_SIZE]) + hashlib.sha256(block).digest()


def cid_v1_bytes(mhash: bytes) -> bytes:
    return bytes([CID_V1, DAG_PB]) + mhash


def format_cid(mhash: bytes) -> str:
    """The text form of a dag-pb CIDv1: multibase 'b' (base32, lowercase, unpadded)."""
    return "b" + base64.b32encode(cid_v1_bytes(mhash)).decode("ascii").lower().rstrip("=")


def parse_cid(text: str) -> bytes:
    """The multihash named by `text`, which must be a CIDv1 of a dag-pb sha2-256 node in base32."""
    if not _CID_TEXT.fullmatch(text):
        raise InvalidCid(f"{text!r} is not a CID of this store (CIDv1, dag-pb, sha2-256, base32: 'bafybei…')")
    raw = base64.b32decode(text[1:].upper() + "=" * (-len(text[1:]) % 8))
    if not raw.startswith(_V1_PREFIX) or len(raw) != len(_V1_PREFIX) + _DIGEST_SIZE or format_cid(raw[2:]) != text:
        raise InvalidCid(f"{text!r} is not a canonical CIDv1 of a dag-pb sha2-256 node")
    return raw[2:]


def _unixfs_file(data: bytes | None, filesize: int, blocksizes: Iterable[int] = ()) -> bytes:
    out = _int_field(1, _UNIXFS_FILE)
    if data is not None:
        out += _bytes_field(2, data)
    out += _int_field(3, filesize)
    for size in blocksizes:
        out += _int_field(4, size)
    return out


class Link(NamedTuple):
    """A child as its parent names it: multihash, cumulative DAG size (Tsize), file bytes under it."""

    mhash: bytes
    tsize: int
    filesize: int


def _pb_node(links: list[Link], data: bytes) -> bytes:
    out = b"".join(
        _bytes_field(2, _bytes_field(1, link.mhash) + _bytes_field(2, b"") + _int_field(3, link.tsize))
        for link in links
    )
    return out + _bytes_field(1, data)


def leaf_block(chunk: bytes) -> bytes:
    """A UnixFS File leaf wrapped in dag-pb (what `ipfs add` writes without raw leaves)."""
    return _pb_node([], _unixfs_file(chunk, len(chunk)))


def empty_file_block() -> bytes:
    """The empty file: a File node without Data (go-unixfs leaves a nil Data out)."""
    return _pb_node([], _unixfs_file(None, 0))


def inner_block(links: list[Link]) -> bytes:
    return _pb_node(links, _unixfs_file(None, sum(link.filesize for link in links), (link.filesize for link in links)))


class DagBuilder:
    """Builds a blob's UnixFS DAG from its bytes as they come; `finish()` names its root.

    The balanced layout of go-unixfs, expressed level by level: leaves fill a node of 174 links,
    full nodes fill the level above, and at the end each level's partial node goes up until one
    node is left (a single leaf is its own root). Every block goes to `sink` once, as it is made,
    with its multihash; the root is made, and sent, last.
    """

    def __init__(self, sink: BlockSink | None = None) -> None:
        self._sink = sink
        self._buffer = bytearray()
        self._levels: list[list[Link]] = [[]]
        self._last: bytes | None = None  # the newest block's multihash: the root once finished
        self._root: str | None = None

    def update(self, data: bytes | memoryview) -> None:
        if self._root is not None:
            raise ValueError("DagBuilder.update after finish")
        self._buffer += data
        if len(self._buffer) < CHUNK_SIZE:
            return
        view = memoryview(self._buffer)
        whole = len(view) - len(view) % CHUNK_SIZE
        try:
            for start in range(0, whole, CHUNK_SIZE):
                self._add_leaf(bytes(view[start : start + CHUNK_SIZE]))
        finally:
            view.release()
        del self._buffer[:whole]

    def finish(self) -> str:
        if self._root is not None:
            return self._root
        if self._buffer:
            self._add_leaf(bytes(self._buffer))
            self._buffer.clear()
        elif self._last is None:
            self._emit(empty_file_block())
        level = 0
        while not self._is_root_level(level):
            if self._levels[level]:
                self._add(level + 1, self._make_inner(self._levels[level]))
                self._levels[level] = []
            level += 1
        assert self._last is not None
        self._root = format_cid(self._last)
        return self._root

    def _is_root_level(self, level: int) -> bool:
        return len(self._levels[level]) <= 1 and not any(self._levels[level + 1 :])

    def _add_leaf(self, chunk: bytes) -> None:
        block = leaf_block(chunk)
        self._add(0, Link(self._emit(block), len(block), len(chunk)))

    def _add(self, level: int, link: Link) -> None:
        if level == len(self._levels):
            self._levels.append([])
        self._levels[level].append(link)
        if len(self._levels[level]) == MAX_LINKS:  # full: it will never take another child
            full, self._levels[level] = self._levels[level], []
            self._add(level + 1, self._make_inner(full))

    def _make_inner(self, links: list[Link]) -> Link:
        block = inner_block(links)
        tsize = len(block) + sum(link.tsize for link in links)
        return Link(self._emit(block), tsize, sum(link.filesize for link in links))

    def _emit(self, block: bytes) -> bytes:
        mhash = multihash(block)
        if self._sink is not None:
            self._sink(mhash, block)
        self._last = mhash
        return mhash


READ_SIZE = 1 << 20


def cid_of_stream(stream: BinaryIO, sink: BlockSink | None = None) -> str:
    builder = DagBuilder(sink)
    while chunk := stream.read(READ_SIZE):
        builder.update(chunk)
    return builder.finish()


def cid_of_file(path: Path, sink: BlockSink | None = None) -> str:
    with path.open("rb") as stream:
        return cid_of_stream(stream, sink)


def cid_of_bytes(data: bytes) -> str:
    builder = DagBuilder()
    builder.update(data)
    return builder.finish()
