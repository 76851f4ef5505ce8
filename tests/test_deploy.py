"""Deploying: deployment.yaml's validation, deterministic bundles and their safe extraction, signed
specs that refuse every tampering, sealed env vars, the terms, and `cutor-spool deploy` itself."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import stat
import struct
import subprocess
import warnings
import zipfile
from pathlib import Path
from typing import Any

import nacl.public
import pytest
from click.testing import CliRunner
from conftest import CLI, wait_until
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cutor_spool.cli import cli
from cutor_spool.deployments import bundle, keys
from cutor_spool.deployments.cid import cid_of_bytes
from cutor_spool.deployments.errors import (
    BadManifest,
    BadSignature,
    BadSpec,
    BlobMismatch,
    BundleError,
    SealError,
    TermsNotAccepted,
    UnknownCid,
)
from cutor_spool.deployments.manifest import MANIFEST_NAME, manifest_for_spec, parse_manifest, read_manifest
from cutor_spool.deployments.spec import (
    Deployment,
    accept_terms,
    load_deployment,
    make_spec,
    open_env,
    spec_bytes,
)
from cutor_spool.deployments.store import Store
from cutor_spool.deployments.terms import DEFAULT_TERMS, read_terms, store_terms
from cutor_spool.documents.deployment import SPEC_CONTEXT, DeploymentSpec, canonical
from cutor_spool.layout import SpoolPaths

NOBODY = 65534
SECRET = "s3cr3t-value-that-must-not-leak-7f1c"

# -- bundles


def _tree(root: Path, order: list[str], *, umask: int = 0o022) -> Path:
    """The same three files, made in `order`, under `umask`, with mtimes that depend on the order."""
    contents = {
        "run.sh": (b"#!/bin/sh\ncat\n", True),
        "lib/util.txt": (b"util\n", False),
        "a.txt": (b"A" * 5000, False),
    }
    old = os.umask(umask)
    try:
        root.mkdir()
        for i, name in enumerate(order):
            data, executable = contents[name]
            path = root / name
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(data)
            if executable:
                path.chmod(path.stat().st_mode | stat.S_IXUSR)
            os.utime(path, (1_000_000 + i * 7777, 1_000_000 + i * 7777))
    finally:
        os.umask(old)
    return root


def test_same_files_give_the_same_bundle_bytes_and_cid(tmp_path: Path) -> None:
    one = bundle.pack(_tree(tmp_path / "one", ["run.sh", "lib/util.txt", "a.txt"]))
    two = bundle.pack(_tree(tmp_path / "two", ["a.txt", "lib/util.txt", "run.sh"], umask=0o077))
    assert one == two
    assert cid_of_bytes(one) == cid_of_bytes(two)
    # Pinned: a change of the zip's bytes (a Python upgrade, a change here) changes every deployment's id.
    assert cid_of_bytes(one) == "bafybeif5iuul5mgsl5ccg6jpwrxagugxwvvuatx5qh764g2i22jkddnwri"

    with zipfile.ZipFile(io.BytesIO(one)) as z:
        infos = z.infolist()
    assert [i.filename for i in infos] == ["a.txt", "lib/util.txt", "run.sh"]
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert [i.external_attr >> 16 for i in infos] == [0o100644, 0o100644, 0o100755]
    assert {i.compress_type for i in infos} == {zipfile.ZIP_STORED} and {i.extra for i in infos} == {b""}

    (tmp_path / "one" / "a.txt").write_bytes(b"B" * 5000)
    assert bundle.pack(tmp_path / "one") != one


def test_pack_skips_and_adds_files(tmp_path: Path) -> None:
    root = _tree(tmp_path / "d", ["run.sh", "lib/util.txt", "a.txt"])
    (root / MANIFEST_NAME).write_text("run: ./run.sh\n")
    data = bundle.pack(root, skip={MANIFEST_NAME, "lib"}, extra={"gen/x.py": (b"print(1)\n", True)})
    files = _listing(data)
    assert files == {
        "a.txt": (b"A" * 5000, 0o100644),
        "gen/x.py": (b"print(1)\n", 0o100755),
        "run.sh": (b"#!/bin/sh\ncat\n", 0o100755),
    }
    with pytest.raises(BundleError, match="given twice"):
        bundle.pack(root, extra={"a.txt": (b"", False)})


def _listing(data: bytes) -> dict[str, tuple[bytes, int]]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {i.filename: (z.read(i), i.external_attr >> 16) for i in z.infolist()}


def test_pack_refuses_what_is_not_a_plain_file_and_lists_every_problem(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    (root / "ok.txt").write_text("ok")
    (root / "link").symlink_to("/etc/passwd")
    os.mkfifo(root / "fifo")
    (root / "hard").write_text("h")
    os.link(root / "hard", tmp_path / "outside")
    (root / "big").write_bytes(b"x" * 2000)
    (root / "back\\slash").write_text("b")
    os.close(os.open(os.fsencode(root) + b"/bad-\xff", os.O_CREAT | os.O_WRONLY, 0o644))
    with pytest.raises(BundleError) as caught:
        bundle.pack(root, max_file_size=1000)
    text = str(caught.value)
    assert len(caught.value.problems) == 6, text
    for expected in (
        "'link': a symbolic link",
        "'fifo': a FIFO",
        "'hard': has 2 hard links",
        "'big': 2000 bytes",
        "backslash",
        "not valid UTF-8",
    ):
        assert expected in text
    many = tmp_path / "many"
    many.mkdir()
    for i in range(20):
        (many / f"f{i:02}").write_bytes(b"x" * 100)
    for i in range(3):
        (many / f"dir{i}").mkdir()
    with pytest.raises(BundleError) as caught:
        bundle.pack(many, max_files=2)
    assert caught.value.problems == ("more than 2 directories",)
    for i in range(3):
        (many / f"dir{i}").rmdir()
    for limits, expected in (
        ({"max_files": 2}, "more than 2 files"),
        ({"max_bytes": 250}, "more than 250 bytes in all"),
    ):
        with pytest.raises(BundleError) as caught:
            bundle.pack(many, **limits)
        assert caught.value.problems == (expected,)


def test_pack_refuses_a_tree_nested_too_deep(tmp_path: Path) -> None:
    # A compile stage may leave any tree in a work area: 600 levels (the walk recursing twice per level)
    # must be a problem, not a RecursionError; shutil.rmtree still removes it (once per level).
    root = tmp_path / "deep"
    root.mkdir()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(600):
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        os.close(os.open("f", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    try:
        with pytest.raises(BundleError, match=f"nested deeper than {bundle.MAX_DEPTH}"):
            bundle.pack(root)
    finally:  # GNU rm walks any depth; pytest's own clean-up of old runs recurses and would fail on it
        subprocess.run(["rm", "-rf", str(root)], check=True)
    with pytest.raises(BundleError, match="nested deeper"):
        bundle.unpack(_zip([("d/" * 100 + "f", b"")]), tmp_path, uid=NOBODY, gid=NOBODY, max_files=9, max_bytes=9)


def test_unpack_round_trip_owned_by_the_job_user(tmp_path: Path) -> None:
    data = bundle.pack(_tree(tmp_path / "src", ["run.sh", "lib/util.txt", "a.txt"]))
    dest = tmp_path / "work"
    dest.mkdir()
    bundle.unpack(data, dest, uid=NOBODY, gid=NOBODY, max_files=10, max_bytes=1 << 20)
    assert (dest / "run.sh").read_bytes() == b"#!/bin/sh\ncat\n"
    assert (dest / "lib" / "util.txt").read_bytes() == b"util\n"
    for path, mode in ((dest / "run.sh", 0o755), (dest / "a.txt", 0o644), (dest / "lib", 0o755)):
        st = path.lstat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (mode, NOBODY, NOBODY)
    # Unpacking what was unpacked and packed again gives the same bytes: a work area round-trips.
    assert bundle.pack(dest) == data
    (tmp_path / "b.zip").write_bytes(data)
    again = tmp_path / "again"
    again.mkdir()
    bundle.unpack(tmp_path / "b.zip", again, uid=NOBODY, gid=NOBODY, max_files=10, max_bytes=1 << 20)
    assert bundle.pack(again) == data


def _zip(entries: list[tuple[zipfile.ZipInfo | str, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", compression=compression) as z:
        warnings.simplefilter("ignore")  # "Duplicate name": on purpose
        for info, data in entries:
            z.writestr(info, data)
    return buffer.getvalue()


def _symlink_entry(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


def _lie_about_size(data: bytes, size: int) -> bytes:
    """The zip with its (first) central directory entry declaring `size` uncompressed bytes."""
    at = data.index(b"PK\x01\x02")
    return data[: at + 24] + struct.pack("<I", size) + data[at + 28 :]


HOSTILE = {
    "zip-slip": (_zip([("../escaped", b"x")]), "climbs out"),
    "deep zip-slip": (_zip([("a/../../escaped", b"x")]), "climbs out"),
    "absolute": (_zip([("/tmp/escaped-abs", b"x")]), "absolute"),
    "symlink entry": (_zip([_symlink_entry("link", "/etc/passwd")]), "symbolic link"),
    "symlink then write through it": (
        _zip([_symlink_entry("d", "/tmp"), ("d/escaped", b"x")]),
        "symbolic link",
    ),
    "backslash": (_zip([("..\\escaped", b"x")]), "backslash"),
    "duplicate": (_zip([("a", b"1"), ("a", b"2")]), "given twice"),
    "file and directory": (_zip([("a", b"1"), ("a/b", b"2")]), "same name"),
    "too many files": (_zip([(f"f{i}", b"") for i in range(11)]), "more than the limit of 10"),
    "declared too large": (_zip([("big", b"x" * 2000)]), "declare more than the limit"),
    "size lie (smaller)": (_lie_about_size(_zip([("bomb", b"x" * 500)], zipfile.ZIP_DEFLATED), 10), "bomb"),
    "size lie (stored)": (_lie_about_size(_zip([("lie", b"x" * 500)]), 10), "lie"),
    "size lie (larger)": (_lie_about_size(_zip([("lie", b"x" * 500)]), 600), "500 bytes, not the 600 it declares"),
    "not a zip": (b"PK\x03\x04 not really", "not a zip"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_unpack_refuses_hostile_zips(tmp_path: Path, case: str) -> None:
    data, message = HOSTILE[case]
    dest = tmp_path / "work"
    dest.mkdir()
    with pytest.raises(BundleError, match=message):
        bundle.unpack(data, dest, uid=NOBODY, gid=NOBODY, max_files=10, max_bytes=1000)
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/escaped").exists()
    assert not Path("/tmp/escaped-abs").exists()
    assert not any(p.is_symlink() for p in dest.rglob("*"))


def test_unpack_stops_a_zip_bomb_at_the_limit(tmp_path: Path) -> None:
    data = _lie_about_size(_zip([("bomb", bytes(50 << 20))], zipfile.ZIP_DEFLATED), 100)
    assert len(data) < 1 << 20
    dest = tmp_path / "work"
    dest.mkdir()
    with pytest.raises(BundleError):
        bundle.unpack(data, dest, uid=NOBODY, gid=NOBODY, max_files=10, max_bytes=1 << 20)
    assert sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) <= 1 << 20


_NAME_PART = st.text(alphabet="abcxyz.-_é", min_size=1, max_size=6).filter(lambda p: p not in (".", ".."))
_FILES = st.dictionaries(
    st.lists(_NAME_PART, min_size=1, max_size=3).map("/".join),
    st.tuples(st.binary(max_size=300), st.booleans()),
    max_size=6,
)
_HOSTILE_NAME = (
    st.tuples(
        st.sampled_from(["", "/", "./"]),
        st.lists(st.sampled_from(["a", "..", ".", "", "..\\..", "b\x00c", "\n", "é"]), min_size=1, max_size=5).map(
            "/".join
        ),
        st.sampled_from(["", "/"]),
    )
    .map("".join)
    .filter(lambda name: name.split("\x00")[0] not in ("", "/"))
)  # zipfile cannot write those


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(files=_FILES)
def test_unpacking_a_packed_tree_gives_it_back(tmp_path_factory: pytest.TempPathFactory, files: dict) -> None:
    names = sorted(files)
    # A name that is also another's directory cannot be a file: leave such trees out.
    assume(not any(b.startswith(a + "/") for a in names for b in names))
    data = bundle.zip_files(files)
    dest = tmp_path_factory.mktemp("unpacked")
    bundle.unpack(data, dest, uid=NOBODY, gid=NOBODY, max_files=10, max_bytes=1 << 20)
    assert {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()} == set(names)
    for name, (content, executable) in files.items():
        assert (dest / name).read_bytes() == content
        assert stat.S_IMODE((dest / name).stat().st_mode) == (0o755 if executable else 0o644)
    assert bundle.pack(dest) == data


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(names=st.lists(_HOSTILE_NAME, min_size=1, max_size=4))
def test_unpack_writes_below_its_directory_or_refuses(tmp_path_factory: pytest.TempPathFactory, names: list) -> None:
    base = tmp_path_factory.mktemp("hostile")
    dest = base / "inside" / "work"
    dest.mkdir(parents=True)
    data = _zip([(name, b"x") for name in names])
    try:
        bundle.unpack(data, dest, uid=NOBODY, gid=NOBODY, max_files=10, max_bytes=1000)
    except BundleError:
        pass
    outside = [p for p in base.rglob("*") if not p.is_relative_to(dest) and p not in (base / "inside", dest)]
    assert outside == []


# -- deployment.yaml


def _deployment(root: Path, yaml_text: str, files: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True)
    (root / MANIFEST_NAME).write_text(yaml_text)
    for name, text in (files or {}).items():
        (root / name).write_text(text)
    return root


def test_manifest_reads_the_fields_and_keeps_env_out_of_the_spec(tmp_path: Path) -> None:
    root = _deployment(
        tmp_path / "d",
        f"""
dependencies: [python3]
compile: python3 -m py_compile app.py
run: {{file: run.sh}}
files:
  - {{name: conf/x.txt, content: "hi"}}
env: {{API_TOKEN: {SECRET}}}
limits: {{run: {{wall_time: 2s, memory: 64MiB}}}}
""",
        {"run.sh": "#!/bin/sh\npython3 app.py\n", "app.py": "print(1)\n"},
    )
    manifest = read_manifest(root)
    assert manifest.env == {"API_TOKEN": SECRET}
    assert manifest.limits.run is not None and manifest.limits.run.wall_time == 2.0
    spec_manifest = manifest_for_spec(manifest)
    assert "env" not in spec_manifest and "files" not in spec_manifest
    assert SECRET not in json.dumps(spec_manifest)
    assert spec_manifest["run"] == {"file": "run.sh"} and spec_manifest["dependencies"] == ["python3"]
    again = parse_manifest(spec_manifest)  # what an executor reads back from the spec
    assert again.run == manifest.run and again.limits == manifest.limits and again.env == {}


@pytest.mark.parametrize(
    ("text", "files", "expected"),
    [
        (
            "run: [not, a, script]\nsecrets: 1\nlimits: {run: {wall_time: soon}}\nenv: {'1BAD': x}\n",
            {},
            ["secrets: unknown key", "run: expected a shell script", "limits.run.wall_time:", "env.1BAD"],
        ),
        ("compile: make\n", {}, ["(top level): give `run` (a program per invocation) or `server`"]),  # warm servers
        ("run: [unclosed\n", {}, ["deployment.yaml: is not valid YAML"]),
        ("run: {file: missing.sh}\ndependencies: {nix: env.nix}\n", {}, ["run.file: 'missing.sh'", "dependencies.nix"]),
        ("run: echo\nfiles: [{name: ../x, content: a}]\n", {}, ["files.0.name: '../x' escapes"]),
        (
            "run: echo\nfiles: [{name: a.txt, content: a}, {name: b, content: '!!', encoding: base64}]\n",
            {"a.txt": "a"},
            ["files.0.name: 'a.txt' is given twice", "files.1.content: is not valid base64"],
        ),
        ("- a list\n", {}, ["must be a mapping"]),
    ],
)
def test_malformed_manifests_list_every_problem(
    tmp_path: Path, text: str, files: dict[str, str], expected: list[str]
) -> None:
    root = _deployment(tmp_path / "d", text, files)
    with pytest.raises(BadManifest) as caught:
        read_manifest(root)
    message = str(caught.value)
    for part in expected:
        assert part in message, message
    assert len(caught.value.problems) == len(expected), message


def test_named_files_must_be_the_directorys_own(tmp_path: Path) -> None:
    root = _deployment(tmp_path / "real" / "d", "run: {file: run.sh}\ncompile: {file: sub/make.sh}\n")
    (root / "run.sh").symlink_to("/bin/true")
    (root / "sub").symlink_to("/etc")
    (tmp_path / "via").symlink_to(tmp_path / "real")  # a symlink above the directory is the user's own
    with pytest.raises(BadManifest) as caught:
        read_manifest(tmp_path / "via" / "d")
    assert [where for where, _ in caught.value.problems] == ["compile.file", "run.file"]
    (root / "run.sh").unlink()
    (root / "run.sh").write_text("cat\n")
    (root / "sub").unlink()
    (root / "sub").mkdir()
    (root / "sub" / "make.sh").write_text("true\n")
    assert read_manifest(tmp_path / "via" / "d").run.file == "run.sh"  # type: ignore[union-attr]


def test_a_directory_without_deployment_yaml_is_refused(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(BadManifest, match="is missing"):
        read_manifest(tmp_path / "d")


# -- specs


@pytest.fixture
def deployed(spool: Path, tmp_path: Path) -> dict[str, object]:
    """A deployment made by the library, step by step as `deploy` makes it."""
    store = Store(spool)
    server_private = tmp_path / "server.key"
    server_public = keys.make_server_key(spool, server_private)
    owner = keys.SigningKey.generate()
    root = _deployment(tmp_path / "app", f"run: cat\nenv: {{TOKEN: {SECRET}}}\n")
    manifest = read_manifest(root)
    terms_cid = store_terms(SpoolPaths(spool), store)
    bundle_cid = store.put(bundle.pack(root, skip={MANIFEST_NAME}))
    spec, data = make_spec(
        owner, bundle=bundle_cid, manifest=manifest, terms=accept_terms(owner, terms_cid), server_key=server_public
    )
    cid = store.put(data)
    return {
        "store": store,
        "cid": cid,
        "spec": spec,
        "owner": owner,
        "server": keys.read_server_private(server_private),
    }


def _store_spec(store: Store, data: dict[str, object]) -> str:
    return store.put((json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def _resign(data: dict[str, object], key: keys.SigningKey) -> dict[str, object]:
    unsigned = {k: v for k, v in data.items() if k != "signature"}
    return {**unsigned, "signature": base64.b64encode(key.sign(SPEC_CONTEXT + canonical(unsigned))).decode()}


def test_a_spec_round_trips_and_its_env_opens_with_the_server_key(deployed: dict) -> None:
    store, cid = deployed["store"], deployed["cid"]
    deployment = load_deployment(store, cid)
    assert deployment.cid == cid and deployment.spec == deployed["spec"]
    assert deployment.spec.owner == deployed["owner"].public
    assert deployment.manifest.run == "cat" and deployment.manifest.env == {}
    assert open_env(deployment, deployed["server"]) == {"TOKEN": SECRET}
    assert SECRET.encode() not in store.get(cid)
    assert spec_bytes(deployment.spec) == store.get(cid)


def test_a_tampered_spec_blob_is_never_read(deployed: dict) -> None:
    store, cid = deployed["store"], deployed["cid"]
    path = store.path(cid)
    data = path.read_bytes()
    path.chmod(0o644)
    path.write_bytes(data.replace(b'"cat"', b'"sh "'))
    with pytest.raises(BlobMismatch):
        load_deployment(store, cid)
    with pytest.raises(UnknownCid):
        load_deployment(store, cid_of_bytes(b"no such spec"))


def test_a_changed_or_resigned_spec_is_refused(deployed: dict) -> None:
    store, cid = deployed["store"], deployed["cid"]
    original = json.loads(store.get(cid))
    changed = {**original, "manifest": {**original["manifest"], "run": "cat /etc/shadow"}}
    with pytest.raises(BadSignature, match="owner's signature"):
        load_deployment(store, _store_spec(store, changed))
    # Re-signed by someone else, in the owner's name:
    with pytest.raises(BadSignature):
        load_deployment(store, _store_spec(store, _resign(changed, keys.SigningKey.generate())))
    # A field that this version does not know, added after the signature, breaks it too:
    with pytest.raises(BadSignature):
        load_deployment(store, _store_spec(store, {**original, "later": 1}))
    # Signed by its owner, it is a new deployment with its own id:
    resigned = _store_spec(store, _resign(changed, deployed["owner"]))
    assert resigned != cid and load_deployment(store, resigned).manifest.run == "cat /etc/shadow"
    with pytest.raises(BadSpec, match="unsealed"):
        load_deployment(
            store,
            _store_spec(store, _resign({**original, "manifest": {"run": "x", "env": {"A": "b"}}}, deployed["owner"])),
        )
    with pytest.raises(BadSpec, match="not a deployment spec"):
        load_deployment(store, store.put(b'{"owner": 1}'))


def test_terms_signed_over_other_terms_or_missing_are_refused(deployed: dict) -> None:
    store, owner = deployed["store"], deployed["owner"]
    original = json.loads(store.get(deployed["cid"]))
    other = store.put(b"other terms, never shown\n")
    swapped = {**original, "terms": {**original["terms"], "cid": other}}  # the old signature, other terms
    with pytest.raises(TermsNotAccepted, match="does not verify"):
        load_deployment(store, _store_spec(store, _resign(swapped, owner)))
    absent = cid_of_bytes(b"terms this spool never had\n")
    missing = {**original, "terms": accept_terms(owner, absent).dump()}
    with pytest.raises(TermsNotAccepted, match="not in this spool's store"):
        load_deployment(store, _store_spec(store, _resign(missing, owner)))
    no_bundle = {**original, "bundle": cid_of_bytes(b"no bundle")}
    with pytest.raises(UnknownCid, match="bundle"):
        load_deployment(store, _store_spec(store, _resign(no_bundle, owner)))


def test_a_sealed_env_opens_with_the_right_key_only(deployed: dict) -> None:
    deployment: Deployment = load_deployment(deployed["store"], deployed["cid"])
    stranger = nacl.public.PrivateKey.generate()
    with pytest.raises(SealError, match="sealed to"):
        open_env(deployment, stranger)
    # A stranger's key that claims to be the spool's (the spec's server_key edited to match) still
    # does not open the box:
    claimed = keys.public_text(keys.X25519, bytes(stranger.public_key))
    spec = deployment.spec.model_copy(update={"server_key": claimed})
    with pytest.raises(SealError, match="does not open"):
        open_env(Deployment(deployment.cid, spec, deployment.manifest), stranger)
    sealed = bytearray(base64.b64decode(deployment.spec.sealed_env or ""))
    sealed[-1] ^= 1
    flipped = deployment.spec.model_copy(update={"sealed_env": base64.b64encode(bytes(sealed)).decode()})
    with pytest.raises(SealError, match="does not open"):
        open_env(Deployment(deployment.cid, flipped, deployment.manifest), deployed["server"])


def test_env_without_a_server_key_is_refused(tmp_path: Path) -> None:
    manifest = parse_manifest({"run": "cat", "env": {"A": "b"}})
    owner = keys.SigningKey.generate()
    with pytest.raises(keys.KeyFileError, match="no server key"):
        make_spec(
            owner,
            bundle=cid_of_bytes(b""),
            manifest=manifest,
            terms=accept_terms(owner, cid_of_bytes(b"")),
            server_key=None,
        )
    spec, _ = make_spec(
        owner,
        bundle=cid_of_bytes(b""),
        manifest=parse_manifest({"run": "cat"}),
        terms=accept_terms(owner, cid_of_bytes(b"")),
        server_key=None,
    )
    assert spec.sealed_env is None and spec.server_key is None and isinstance(spec, DeploymentSpec)


def test_init_writes_default_terms_and_keeps_the_operators(spool: Path, tmp_path: Path) -> None:
    paths = SpoolPaths(spool)
    assert read_terms(paths) == DEFAULT_TERMS.encode()
    paths.terms.write_text("# Our terms\n")
    assert CliRunner().invoke(cli, ["--spool", str(spool), "init"]).exit_code == 0
    assert read_terms(paths) == b"# Our terms\n"
    cid = store_terms(paths, Store(spool))
    assert Store(spool).get(cid) == b"# Our terms\n"


# -- `cutor-spool deploy`

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "deploy-echo"
EXIT_INVALID, EXIT_TIMEOUT, EXIT_TERMS = 3, 5, 8


def _app(tmp_path: Path, env: dict[str, str] | None = None) -> Path:
    root = tmp_path / "app"
    root.mkdir()
    lines = ["run: sh echo.sh", "files: [{name: gen/inline.txt, content: inline}]"]
    if env:
        lines.append("env: " + json.dumps(env))
    (root / MANIFEST_NAME).write_text("\n".join(lines) + "\n")
    (root / "echo.sh").write_text('printf "\\n%s" "$TOKEN"; cat\n')
    return root


def _owner(tmp_path: Path) -> tuple[Path, keys.SigningKey]:
    path = tmp_path / "owner.key"
    key = keys.SigningKey.generate()
    keys.write_signing_key(key, path)
    return path, key


def _deploy(spool: Path, *args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--spool", str(spool), "deploy", *map(str, args)])
    return result.exit_code, result.stdout, result.stderr


def _every_file(spool: Path) -> list[Path]:
    return [p for p in spool.rglob("*") if p.is_file() and not p.is_symlink()]


def _nothing_stored(spool: Path) -> None:
    assert Store(spool).ls() == []
    assert list((spool / "invocations" / "incoming").iterdir()) == []
    assert list((spool / "deployments").iterdir()) == []
    assert list((spool / "tmp").iterdir()) == []


def test_deploy_stores_a_verified_spec_and_drops_its_build(spool: Path, tmp_path: Path) -> None:
    keys.make_server_key(spool, tmp_path / "server.key")
    key_file, owner = _owner(tmp_path)
    code, out, err = _deploy(spool, _app(tmp_path, {"TOKEN": SECRET}), "--key", key_file, "--accept-terms", "--json")
    assert code == 0, err
    info = json.loads(out)
    store = Store(spool)
    deployment = load_deployment(store, info["deployment"])
    assert (info["owner"], info["bundle"], info["state"]) == (owner.public, deployment.spec.bundle, "pending")
    assert deployment.spec.terms.cid == info["terms"] and store.get(info["terms"]) == DEFAULT_TERMS.encode()
    assert open_env(deployment, keys.read_server_private(tmp_path / "server.key")) == {"TOKEN": SECRET}
    # The bundle: the directory's files and the inline ones, never deployment.yaml (its env is secret).
    assert sorted(_listing(store.get(info["bundle"]))) == ["echo.sh", "gen/inline.txt"]
    record = json.loads((spool / "deployments" / info["deployment"] / "build.json").read_text())
    assert (record["state"], record["build_entry"]) == ("pending", info["build"])
    entry = spool / "invocations" / "incoming" / info["build"]
    assert json.loads((entry / "request.json").read_text())["kind"] == "build"
    assert json.loads((entry / "request.json").read_text())["deployment"] == info["deployment"]
    # The secret is nowhere in the spool, in any file.
    files = _every_file(spool)
    assert len(files) >= 8
    assert [p for p in files if SECRET.encode() in p.read_bytes()] == []


def test_deploy_without_accepting_the_terms_stores_nothing(spool: Path, tmp_path: Path) -> None:
    key_file, _ = _owner(tmp_path)
    code, out, err = _deploy(spool, _app(tmp_path), "--key", key_file)
    assert code == EXIT_TERMS, err
    assert "must be accepted" in err and "--accept-terms" in err and out == ""
    _nothing_stored(spool)


def test_deploy_refuses_an_invalid_directory_with_every_problem(spool: Path, tmp_path: Path) -> None:
    key_file, _ = _owner(tmp_path)
    root = tmp_path / "bad"
    root.mkdir()
    (root / MANIFEST_NAME).write_text("run: {file: missing.sh}\nport: 80\n")
    (root / "link").symlink_to("/etc/passwd")
    code, _, err = _deploy(spool, root, "--key", key_file, "--accept-terms")
    assert code == EXIT_INVALID and "port: unknown key" in err, err
    (root / MANIFEST_NAME).write_text("run: cat\nnetwork: true\n")
    code, _, err = _deploy(spool, root, "--key", key_file, "--accept-terms")
    assert code == EXIT_INVALID and "does not allow network" in err, err
    (root / MANIFEST_NAME).write_text("run: cat\n")
    code, _, err = _deploy(spool, root, "--key", key_file, "--accept-terms")
    assert code == EXIT_INVALID and "'link': a symbolic link" in err, err
    # env vars, but the spool has no server key to seal them to:
    code, _, err = _deploy(spool, _app(tmp_path, {"TOKEN": SECRET}), "--key", key_file, "--accept-terms")
    assert code == 1 and "server key" in err and "keys server" in err, err
    _nothing_stored(spool)


def test_deploy_wait_gives_up_after_its_timeout(spool: Path, tmp_path: Path) -> None:
    key_file, _ = _owner(tmp_path)
    code, out, err = _deploy(spool, _app(tmp_path), "--key", key_file, "--accept-terms", "--wait", "--timeout", "0.3")
    assert code == EXIT_TIMEOUT, err
    cid = out.strip()
    assert "still pending" in err
    assert json.loads((spool / "deployments" / cid / "build.json").read_text())["state"] == "pending"


def _deploy_on_a_terminal(spool: Path, key_file: Path, answer: bytes) -> tuple[int, str, str]:
    """Runs `deploy` with its stdin and stderr on a real pseudo-terminal and types `answer`."""
    master, slave = os.openpty()
    try:
        os.write(master, answer)
        process = subprocess.Popen(
            [*CLI, "--spool", str(spool), "deploy", str(EXAMPLE), "--key", str(key_file)],
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=slave,
        )
        os.close(slave)
        out, _ = process.communicate(timeout=60)
        terminal = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's last writer has gone
                break
            if not chunk:
                break
            terminal += chunk
        return process.returncode, out.decode(), terminal.decode(errors="replace")
    finally:
        os.close(master)


def test_deploy_on_a_terminal_shows_the_terms_and_asks(spool: Path, tmp_path: Path) -> None:
    keys.make_server_key(spool, tmp_path / "server.key")
    key_file, _ = _owner(tmp_path)
    code, out, terminal = _deploy_on_a_terminal(spool, key_file, b"n\n")
    assert code == EXIT_TERMS and "Do you accept these terms?" in terminal, terminal
    assert "# Terms and conditions of this spool" in out
    _nothing_stored(spool)
    code, out, terminal = _deploy_on_a_terminal(spool, key_file, b"y\n")
    assert code == 0, terminal
    cid = out.strip().splitlines()[-1]
    deployment = load_deployment(Store(spool), cid)
    assert Store(spool).get(deployment.spec.terms.cid) == DEFAULT_TERMS.encode()
    assert deployment.manifest.run == "sh echo.sh"


# The executor's side of deployments (builds and invocations) comes from another branch: this test
# runs once it is there.
EXECUTOR_SERVES_DEPLOYMENTS = importlib.util.find_spec("cutor_spool.runner.invocations") is not None


@pytest.mark.slow
@pytest.mark.skipif(not EXECUTOR_SERVES_DEPLOYMENTS, reason="the executor does not build deployments yet")
def test_deploy_wait_follows_a_real_build(spool: Path, tmp_path: Path, executors: Any) -> None:
    server = tmp_path / "server.key"
    keys.make_server_key(spool, server)
    key_file, _ = _owner(tmp_path)
    executors(spool, "--concurrency", "1", "--server-key", str(server))
    code, out, err = _deploy(
        spool, EXAMPLE, "--key", key_file, "--accept-terms", "--wait", "--timeout", "120", "--json"
    )
    assert code == 0, err
    info = json.loads(out)
    assert info["state"] == "ready" and Store(spool).has(info["work"]), info
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / MANIFEST_NAME).write_text("compile: echo no; exit 3\nrun: cat\n")
    code, out, err = _deploy(spool, broken, "--key", key_file, "--accept-terms", "--wait", "--timeout", "120")
    assert code == 1 and "the build failed" in err, err
    # The failed build's record is written before its entry commits: let the entry reach done/.
    wait_until(lambda: not any((spool / "invocations" / "active").iterdir()), 30, "the builds committed")
    greeting = b"hello from a sealed env var"  # examples/deploy-echo's env var
    assert [p for p in _every_file(spool) if greeting in p.read_bytes()] == []
