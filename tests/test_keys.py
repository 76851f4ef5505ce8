"""Keys: signing keys round-trip and refuse tampered signatures, key files are private and never
overwritten, the spool's server key keeps its private half outside the spool, and a sealed value
opens only with the right private key."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import CLI

from cutor_spool.cli import cli
from cutor_spool.deployments import keys
from cutor_spool.deployments.errors import BadSignature, KeyFileError, SealError

PUBLIC = re.compile(r"ed25519:[a-z2-7]{52}")


def test_signing_keys_round_trip(tmp_path: Path) -> None:
    key = keys.SigningKey.generate()
    path = tmp_path / "owner.key"
    keys.write_signing_key(key, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert data["kind"] == keys.SIGNING_KIND and data["algorithm"] == "ed25519" and data["public"] == key.public
    assert len(base64.b64decode(data["seed"])) == 32
    loaded = keys.read_signing_key(path)
    assert loaded.public == key.public and PUBLIC.fullmatch(key.public)
    assert keys.parse_public(key.public, "ed25519") == bytes(key.key.verify_key)

    message = b"terms v1: the operator may run your code"
    signature = loaded.sign(message)
    keys.verify(key.public, message, signature)
    with pytest.raises(BadSignature):
        keys.verify(key.public, message + b"!", signature)
    tampered = bytes([signature[0] ^ 1]) + signature[1:]
    with pytest.raises(BadSignature):
        keys.verify(key.public, message, tampered)
    with pytest.raises(BadSignature):
        keys.verify(keys.SigningKey.generate().public, message, signature)


@pytest.mark.parametrize(
    "text",
    ["ed25519:", "x25519:" + "a" * 52, "ed25519:" + "a" * 51, "ed25519:" + "A" * 52, "ed25519:" + "a" * 52 + "=", ""],
)
def test_malformed_public_keys_are_refused(text: str) -> None:
    with pytest.raises(KeyFileError):
        keys.parse_public(text, "ed25519")


def test_key_files_are_private_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "owner.key"
    keys.write_signing_key(keys.SigningKey.generate(), path)
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="never overwritten"):
        keys.write_signing_key(keys.SigningKey.generate(), path)
    assert path.read_bytes() == before
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        keys.read_signing_key(path)
    os.chmod(path, 0o600)
    data = json.loads(before)
    edited = tmp_path / "edited.key"
    keys.write_signing_key(keys.SigningKey.generate(), edited)
    os.chmod(edited, 0o600)
    other = json.loads(edited.read_text())
    edited.write_text(json.dumps({**other, "public": data["public"]}))
    with pytest.raises(KeyFileError, match="does not belong"):
        keys.read_signing_key(edited)
    with pytest.raises(KeyFileError, match="no such key file"):
        keys.read_signing_key(tmp_path / "missing.key")


def test_server_key_and_sealed_values(spool: Path, tmp_path: Path) -> None:
    private = tmp_path / "server.key"
    public = keys.make_server_key(spool, private)
    assert re.fullmatch(r"x25519:[a-z2-7]{52}", public)
    assert (spool / "keys" / "server.pub").read_text() == public + "\n"
    assert keys.read_server_public(spool) == public
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert keys.public_of_file(private) == public
    secret = b"DATABASE_URL=postgres://owner:hunter2@db/prod"
    sealed = keys.seal(public, secret)
    assert b"hunter2" not in base64.b64decode(sealed)
    assert keys.open_sealed(keys.read_server_private(private), sealed) == secret

    other = tmp_path / "other.key"
    (tmp_path / "other-spool").mkdir()
    keys.make_server_key(tmp_path / "other-spool", other)
    with pytest.raises(SealError):
        keys.open_sealed(keys.read_server_private(other), sealed)
    raw = bytearray(base64.b64decode(sealed))
    raw[-1] ^= 1
    with pytest.raises(SealError):
        keys.open_sealed(keys.read_server_private(private), base64.b64encode(bytes(raw)).decode())
    with pytest.raises(SealError):
        keys.open_sealed(keys.read_server_private(private), "not base64!")

    with pytest.raises(KeyFileError, match="has a server key already"):
        keys.make_server_key(spool, tmp_path / "again.key")
    assert not (tmp_path / "again.key").exists()


def test_the_server_private_key_never_goes_into_the_spool(spool: Path, tmp_path: Path) -> None:
    link = tmp_path / "via-link"
    link.symlink_to(spool / "tmp")
    for inside in (spool / "server.key", spool / "keys" / "server.key", link / "server.key"):
        with pytest.raises(KeyFileError, match="inside the spool"):
            keys.make_server_key(spool, inside)
        assert not inside.exists()
    assert not (spool / "keys" / "server.pub").exists()


# -- the commands


def test_keys_commands(spool: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(cli, ["keys", "new", "--out", str(tmp_path / "owner.key")], catch_exceptions=False)
    assert made.exit_code == 0 and PUBLIC.fullmatch(made.stdout.strip())
    shown = runner.invoke(cli, ["keys", "show", str(tmp_path / "owner.key")], catch_exceptions=False)
    assert shown.stdout == made.stdout
    again = runner.invoke(cli, ["keys", "new", "--out", str(tmp_path / "owner.key")], catch_exceptions=False)
    assert again.exit_code == 1 and "never overwritten" in again.stderr

    inside = runner.invoke(
        cli,
        ["--spool", str(spool), "keys", "server", "--private-out", str(spool / "server.key")],
        catch_exceptions=False,
    )
    assert inside.exit_code == 1 and "inside the spool" in inside.stderr
    assert not (spool / "server.key").exists() and not (spool / "keys").exists()
    server = runner.invoke(
        cli,
        ["keys", "server", "--private-out", str(tmp_path / "server.key"), "--spool", str(spool), "--json"],
        catch_exceptions=False,
    )
    assert server.exit_code == 0, server.output
    info = json.loads(server.stdout)
    assert info["public"] == keys.read_server_public(spool) == keys.public_of_file(tmp_path / "server.key")


def test_keys_in_a_real_process(tmp_path: Path) -> None:
    key = str(tmp_path / "k")
    made = subprocess.run([*CLI, "keys", "new", "--out", key], capture_output=True, text=True, check=True)
    shown = subprocess.run([*CLI, "keys", "show", key], capture_output=True, text=True, check=True)
    assert made.stdout == shown.stdout and PUBLIC.fullmatch(shown.stdout.strip())
    os.chmod(key, 0o640)
    refused = subprocess.run([*CLI, "keys", "show", key], capture_output=True, text=True)
    assert refused.returncode == 1 and "readable by others" in refused.stderr
