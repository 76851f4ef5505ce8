"""Deploying: deployment.yaml's validation, deterministic bundles and their safe extraction, signed
specs that refuse every tampering, sealed env vars, the terms, and `cutor-spool deploy` itself."""

from __future__ import annotations

import base64
import io
import json
import os
import stat
import struct
import warnings
import zipfile
from pathlib import Path

import nacl.public
import pytest
from click.testing import CliRunner

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
    with pytest.raises(BundleError, match="more than 2 files"):
        bundle.pack(_tree(tmp_path / "three", ["run.sh", "lib/util.txt", "a.txt"]), max_files=2)


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
        ("compile: make\n", {}, ["run: is required"]),
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
