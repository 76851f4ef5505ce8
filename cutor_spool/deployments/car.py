"""CARv1 export of a stored blob: the file that `ipfs dag import` reads, so that a bundle can be
published to IPFS unchanged and found there under the id the store gave it.

A CARv1 is a header (a varint length, then the DAG-CBOR map `{"roots": [cid], "version": 1}`)
followed by one section per block (a varint length, the CID's bytes, the block's bytes). The header
is one fixed shape with one CID in it, so it is written by hand rather than through a CBOR library:
DAG-CBOR's canonical form sorts map keys by length ("roots" before "version"), tags a CID with 42
and prefixes its bytes with the identity multibase 0x00. The blocks are recomputed from the blob as
it is read (the store keeps only the blob), the root last; the blob's bytes are checked against
the CID on the way, and a mismatch fails the export.

Every section names its block in CIDv1, though the DAG links its inner blocks by CIDv0: both name
the same multihash, which is what IPFS's blockstore keys blocks by, so `ipfs dag import` resolves
the links either way; one form keeps the root's section equal to the header's root, and the
independent reader the tests use (ipld-car 0.0.1) misreads a CIDv0 section (it skips the
multihash's code byte but not its length byte).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import BinaryIO

from cutor_spool.deployments.cid import cid_v1_bytes, parse_cid, varint
from cutor_spool.deployments.store import Store

_CBOR_CID_TAG = b"\xd8\x2a"  # tag 42


def header(root: str) -> bytes:
    cid = b"\x00" + cid_v1_bytes(parse_cid(root))
    body = b"\xa2" + b"\x65roots" + b"\x81" + _CBOR_CID_TAG + b"\x58" + bytes([len(cid)]) + cid + b"\x67version\x01"
    return varint(len(body)) + body


def section(cid: bytes, block: bytes) -> bytes:
    return varint(len(cid) + len(block)) + cid + block


def export(store: Store, cid: str, out: BinaryIO) -> None:
    """Writes the CARv1 of blob `cid` to `out`, streaming. Raises `UnknownCid` or `BlobMismatch`
    (after part of the CAR may have been written: `export_file` leaves nothing then)."""
    out.write(header(cid))
    store.verify(cid, lambda mhash, block: out.write(section(cid_v1_bytes(mhash), block)))


def export_file(store: Store, cid: str, destination: Path) -> None:
    """`export` into a file that appears whole or not at all."""
    tmp = destination.with_name(f".{destination.name}.{secrets.token_hex(4)}")
    try:
        with tmp.open("xb") as out:
            export(store, cid, out)
        os.replace(tmp, destination)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
