"""The content store: CIDs equal to those of an independent implementation (Debian's `ipfs_cid`)
and to fixed vectors, blobs that never serve changed bytes, and CAR exports that an independent
reader (ipld-car, with ipld-dag-pb to walk the DAG) parses back into the same DAG."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import tracemalloc
from pathlib import Path

import ipld_car
import ipld_dag_pb
import pytest
from click.testing import CliRunner, Result
from conftest import CLI, need
from multiformats import CID, multihash

from cutor_spool.cli import cli
from cutor_spool.deployments import car
from cutor_spool.deployments.cid import CHUNK_SIZE, MAX_LINKS, cid_of_bytes, cid_of_file, parse_cid
from cutor_spool.deployments.errors import BlobMismatch, InvalidCid, UnknownCid
from cutor_spool.deployments.store import Store

# What `ipfs add` and `ipfs_cid` give for these bytes: the CIDv0 of "hello world\n" is the
# well-known QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o; these are the same roots in CIDv1.
VECTORS = {
    b"": "bafybeif7ztnhq65lumvvtr4ekcwd2ifwgm3awq4zfr3srh462rwyinlb4y",
    b"a": "bafybeih22o2lqjyoumhqtqjwjomq3mzvdmxxeaivw52aoh2mytrlujo7yi",
    b"hello world\n": "bafybeicg2rebjoofv4kbyovkw7af3rpiitvnl6i7ckcywaq6xjcxnc2mby",
    bytes(CHUNK_SIZE): "bafybeibsr5kjsohzzjy5qvpycm27g3npukuluduozbmvywb6bdrpocmv7a",
    bytes(CHUNK_SIZE + 1): "bafybeigdq5pm2ymcp653fnskpnnlbhy67k2dk25ynmhjeslhc7eby3z4te",
}
EXIT_NOT_FOUND, EXIT_MISMATCH, EXIT_USAGE = 6, 7, 2


def write_random(path: Path, size: int, seed: int = 1) -> Path:
    """`size` pseudo-random bytes, written 1 MiB at a time (the big ones never sit in memory)."""
    rng = random.Random(seed)
    with path.open("wb") as out:
        left = size
        while left:
            n = min(left, 1 << 20)
            out.write(rng.randbytes(n))
            left -= n
    return path


def ipfs_cid(path: Path) -> str:
    need(shutil.which("ipfs_cid") is not None, "ipfs_cid (Debian's ipfs-cid) is not installed")
    out = subprocess.run(["ipfs_cid", str(path)], capture_output=True, text=True, check=True).stdout
    return str(json.loads(out)["CIDv1"])


@pytest.mark.parametrize(
    "size",
    [0, 1, 12, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 << 20, MAX_LINKS * CHUNK_SIZE, MAX_LINKS * CHUNK_SIZE + 1],
    ids=["empty", "1B", "text", "256KiB-1", "256KiB", "256KiB+1", "3MiB", "174chunks", "175chunks"],
)
def test_cids_equal_ipfs_cids(tmp_path: Path, size: int) -> None:
    blob = write_random(tmp_path / "blob", size) if size != 12 else tmp_path / "blob"
    if size == 12:
        blob.write_bytes(b"hello world\n")
    assert cid_of_file(blob) == ipfs_cid(blob)


def test_fixed_vectors() -> None:
    for data, expected in VECTORS.items():
        assert cid_of_bytes(data) == expected


def test_a_big_file_is_hashed_in_constant_memory(tmp_path: Path, spool: Path) -> None:
    blob = write_random(tmp_path / "big", MAX_LINKS * CHUNK_SIZE + 12345)
    tracemalloc.start()
    try:
        cid = cid_of_file(blob)
        stored = Store(spool).put(blob)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert cid == stored == ipfs_cid(blob)
    assert peak < 8 << 20, f"peak {peak} bytes for a {blob.stat().st_size}-byte file"


@pytest.mark.parametrize(
    "text",
    [
        "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH",  # CIDv0
        "BAFYBEIF7ZTNHQ65LUMVVTR4EKCWD2IFWGM3AWQ4ZFR3SRH462RWYINLB4Y",  # not the lowercase form
        "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",  # raw codec, not dag-pb
        "bafybeif7ztnhq65lumvvtr4ekcwd2ifwgm3awq4zfr3srh462rwyinlb4",  # truncated
        "../../etc/passwd",
        "",
    ],
)
def test_only_canonical_dag_pb_cids_are_names(text: str) -> None:
    with pytest.raises(InvalidCid):
        parse_cid(text)


# -- the store


def test_put_get_has_ls(spool: Path, tmp_path: Path) -> None:
    store = Store(spool)
    blob = write_random(tmp_path / "blob", 700_000)
    cid = store.put(blob)
    assert store.put(blob.read_bytes()) == cid == store.put(io.BytesIO(blob.read_bytes()))  # same bytes, same name
    assert cid == ipfs_cid(blob)
    assert store.has(cid) and store.get(cid) == blob.read_bytes()
    small = store.put(b"hello world\n")
    assert small == VECTORS[b"hello world\n"]
    assert store.ls() == sorted([cid, small])
    path = store.path(cid)
    assert path == spool / "cas" / cid[-3:-1] / cid
    assert path.stat().st_mode & 0o777 == 0o444
    assert list((spool / "tmp").iterdir()) == []  # no temporary is left behind
    store.copy_to(cid, tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == blob.read_bytes()


def test_unknown_cid(spool: Path, tmp_path: Path) -> None:
    store = Store(spool)
    with pytest.raises(UnknownCid, match="not in the store"):
        store.get(VECTORS[b"a"])
    assert not store.has(VECTORS[b"a"])
    with pytest.raises(UnknownCid):
        car.export_file(store, VECTORS[b"a"], tmp_path / "x.car")
    assert not (tmp_path / "x.car").exists()


def tamper(path: Path) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_changed_blob_is_never_served(spool: Path, tmp_path: Path) -> None:
    store = Store(spool)
    cid = store.put(write_random(tmp_path / "blob", 3 << 20))
    tamper(store.path(cid))
    with pytest.raises(BlobMismatch, match="never served"):
        store.get(cid)
    with pytest.raises(BlobMismatch):
        store.copy_to(cid, tmp_path / "copy")
    with pytest.raises(BlobMismatch):
        car.export_file(store, cid, tmp_path / "out.car")
    assert not (tmp_path / "copy").exists() and not (tmp_path / "out.car").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob", "spool"]  # no temporaries either


def test_a_symlink_under_a_cids_name_is_not_followed(spool: Path, tmp_path: Path) -> None:
    store = Store(spool)
    target = tmp_path / "elsewhere"
    target.write_bytes(b"a")
    path = store.path(VECTORS[b"a"])
    path.parent.mkdir(parents=True)
    path.symlink_to(target)  # the right bytes, even: a reader still does not follow a link
    with pytest.raises(BlobMismatch, match="not a blob"):
        store.get(VECTORS[b"a"])


# -- CAR export, read back by an independent reader


def check_car(data: bytes, cid: str, chunks: int) -> None:
    roots, blocks = ipld_car.decode(data)
    assert [root.encode("base32") for root in roots] == [cid]
    by_digest: dict[bytes, bytes] = {}
    for block_cid, block in blocks:
        assert block_cid.codec.name == "dag-pb"
        assert multihash.digest(bytes(block), "sha2-256") == block_cid.digest
        by_digest[bytes(block_cid.digest)] = bytes(block)
    assert len(by_digest) == len(blocks)
    assert blocks[-1][0].encode("base32") == cid  # the root last, named as the header names it
    assert {block_cid.version for block_cid, _ in blocks} == {1}

    leaves = 0

    def walk(digest: bytes) -> None:
        nonlocal leaves
        raw = by_digest.pop(digest)
        node = ipld_dag_pb.decode(raw)
        assert bytes(ipld_dag_pb.encode(node)) == raw  # canonical dag-pb
        leaves += not node.links
        for link in node.links:
            assert isinstance(link.hash, CID) and link.hash.version == 0  # as `ipfs add` links
            walk(bytes(link.hash.digest))

    walk(bytes(CID.decode(cid).digest))
    assert by_digest == {}  # every block is in the DAG, and the DAG is complete
    assert leaves == chunks


@pytest.mark.parametrize("size", [0, 5, 3 << 20, MAX_LINKS * CHUNK_SIZE + 1], ids=["empty", "5B", "3MiB", "175chunks"])
def test_car_export_parses_back(spool: Path, tmp_path: Path, size: int) -> None:
    store = Store(spool)
    cid = store.put(write_random(tmp_path / "blob", size))
    out = io.BytesIO()
    car.export(store, cid, out)
    check_car(out.getvalue(), cid, chunks=max(1, -(-size // CHUNK_SIZE)))


# -- the commands


def invoke(spool: Path, *args: str, input: bytes | None = None) -> Result:
    return CliRunner().invoke(cli, ["--spool", str(spool), *args], input=input, catch_exceptions=False)


def test_cas_commands(spool: Path, tmp_path: Path) -> None:
    blob = write_random(tmp_path / "blob", 600_000)
    put = invoke(spool, "cas", "put", str(blob))
    assert put.exit_code == 0, put.output
    cid = put.stdout.strip()
    assert cid == ipfs_cid(blob)
    assert invoke(spool, "cas", "put", "-", input=b"a").stdout.strip() == VECTORS[b"a"]
    assert invoke(spool, "cas", "ls").stdout.split() == sorted([cid, VECTORS[b"a"]])
    listed = json.loads(invoke(spool, "cas", "ls", "--json").stdout)
    assert {"cid": cid, "size": 600_000} in listed
    got = invoke(spool, "cas", "get", cid)
    assert got.exit_code == 0 and got.stdout_bytes == blob.read_bytes()
    assert invoke(spool, "cas", "get", cid, "-o", str(tmp_path / "copy")).exit_code == 0
    assert (tmp_path / "copy").read_bytes() == blob.read_bytes()
    exported = invoke(spool, "cas", "export", cid, "-o", str(tmp_path / "blob.car"))
    assert exported.exit_code == 0, exported.output
    check_car((tmp_path / "blob.car").read_bytes(), cid, chunks=3)


def test_cas_errors_have_their_exit_codes(spool: Path, tmp_path: Path) -> None:
    unknown = invoke(spool, "cas", "get", VECTORS[b""])
    assert unknown.exit_code == EXIT_NOT_FOUND and "not in the store" in unknown.stderr
    bad = invoke(spool, "cas", "get", "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH")
    assert bad.exit_code == EXIT_USAGE and "is not a CID of this store" in bad.stderr
    cid = Store(spool).put(b"hello world\n")
    tamper(Store(spool).path(cid))
    out, car_file = str(tmp_path / "out"), str(tmp_path / "x.car")
    for args in (["get", cid], ["get", cid, "-o", out], ["export", cid, "-o", car_file]):
        changed = invoke(spool, "cas", *args)
        assert changed.exit_code == EXIT_MISMATCH, changed.output
        assert "never served" in changed.stderr and changed.stdout_bytes == b""
    assert not (tmp_path / "out").exists() and not (tmp_path / "x.car").exists()
    assert invoke(spool, "cas", "ls", "--spool", str(tmp_path / "nothing")).exit_code == 1  # not a spool


def test_cas_in_a_real_process(spool: Path, tmp_path: Path) -> None:
    blob = write_random(tmp_path / "blob", CHUNK_SIZE * 2 + 7)
    run = [*CLI, "--spool", str(spool), "cas"]
    cid = subprocess.run([*run, "put", str(blob)], capture_output=True, text=True, check=True).stdout.strip()
    assert cid == ipfs_cid(blob)
    got = subprocess.run([*run, "get", cid], capture_output=True, check=True)
    assert hashlib.sha256(got.stdout).digest() == hashlib.sha256(blob.read_bytes()).digest()
    tamper(Store(spool).path(cid))
    refused = subprocess.run([*run, "get", cid], capture_output=True, text=True)
    assert refused.returncode == EXIT_MISMATCH and refused.stdout == "" and "never served" in refused.stderr
