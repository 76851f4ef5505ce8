"""Keys of deployments: owners' and payers' Ed25519 signing keys, and the spool's X25519 key pair
to which deployments seal their env vars.

PyNaCl (libsodium) rather than `cryptography`: env vars are sealed with libsodium's sealed box
(`crypto_box_seal`: an ephemeral X25519 key, XSalsa20-Poly1305, the nonce derived from both public
keys), which `cryptography` does not offer; rebuilding it from X25519 and a cipher there would be
hand-rolled crypto. One library then serves both, and its Ed25519 is libsodium's too.

Text forms (stable, because a public key names an owner in a spec and, later, a ledger account):

    ed25519:<base32>    an owner's or payer's public key (32 bytes; lowercase RFC 4648 base32,
                        unpadded: 52 characters, safe in file names, URLs and case-insensitive
                        file systems)
    x25519:<base32>     the spool's public key, the one line of `spool/keys/server.pub`

A private key file is JSON, mode 0600, created exclusively (never overwritten):
`{"kind": "cutor-spool signing key", "algorithm": "ed25519", "seed": <base64>, "public": <text>}`
for a signing key, and `"kind": "cutor-spool server key", "algorithm": "x25519", "private": …` for
the server's. `public` is a convenience, checked against the secret when the file is read. A file
that others can read is refused, as ssh refuses one.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.public
import nacl.signing

from cutor_spool.atomic import write_bytes
from cutor_spool.deployments.errors import BadSignature, KeyFileError, SealError

SIGNING_KIND = "cutor-spool signing key"
SERVER_KIND = "cutor-spool server key"
ED25519 = "ed25519"
X25519 = "x25519"
KEYS_DIR = "keys"
SERVER_PUBLIC = "server.pub"


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").lower().rstrip("=")


def public_text(algorithm: str, raw: bytes) -> str:
    return f"{algorithm}:{_b32(raw)}"


def parse_public(text: str, algorithm: str) -> bytes:
    """The 32 raw bytes of a public key in its text form; KeyFileError if it is not one."""
    prefix, _, body = text.strip().partition(":")
    try:
        raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
    except (binascii.Error, ValueError):
        raw = b""
    if prefix != algorithm or len(raw) != 32 or _b32(raw) != body:
        raise KeyFileError(f"{text.strip()!r} is not an {algorithm} public key ('{algorithm}:' and 52 base32 letters)")
    return raw


# -- signing keys (owners, payers)


@dataclass(frozen=True)
class SigningKey:
    key: nacl.signing.SigningKey

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(nacl.signing.SigningKey.generate())

    @property
    def public(self) -> str:
        return public_text(ED25519, bytes(self.key.verify_key))

    def sign(self, message: bytes) -> bytes:
        """The 64-byte detached signature of `message`."""
        return self.key.sign(message).signature

    def to_json(self) -> dict[str, str]:
        seed = base64.b64encode(bytes(self.key)).decode("ascii")
        return {"kind": SIGNING_KIND, "algorithm": ED25519, "seed": seed, "public": self.public}


def verify(public: str, message: bytes, signature: bytes) -> None:
    """Raises BadSignature unless `signature` is `public`'s over `message`."""
    try:
        nacl.signing.VerifyKey(parse_public(public, ED25519)).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, ValueError) as exc:
        raise BadSignature(f"the signature does not verify with {public}") from exc


def write_signing_key(key: SigningKey, path: Path) -> None:
    _write_private(path, key.to_json())


def read_signing_key(path: Path) -> SigningKey:
    return _signing_key(_read_private(path), path)


def _signing_key(data: dict[str, Any], path: Path) -> SigningKey:
    _expect_kind(data, SIGNING_KIND, path)
    key = nacl.signing.SigningKey(_secret(data, "seed", path))
    _check_public(data, public_text(ED25519, bytes(key.verify_key)), path)
    return SigningKey(key)


def public_of_file(path: Path) -> str:
    """The public key of a signing key file or a server key file, in its text form."""
    data = _read_private(path)
    if data.get("kind") == SERVER_KIND:
        return public_text(X25519, bytes(_server_key(data, path).public_key))
    return _signing_key(data, path).public


# -- the spool's server key pair


def server_public_path(spool: Path) -> Path:
    return spool / KEYS_DIR / SERVER_PUBLIC


def make_server_key(spool: Path, private_out: Path) -> str:
    """Makes the spool's X25519 pair: the private key into `private_out` (0600, outside the spool),
    the public key into `spool/keys/server.pub`. Returns the public key's text. Refuses to replace
    either: a new pair would leave every sealed env of the old one unopenable."""
    if _inside(private_out, spool):
        raise KeyFileError(f"{private_out} is inside the spool {spool}: the server's private key must live outside it")
    public_path = server_public_path(spool)
    if public_path.exists():
        raise KeyFileError(f"{public_path} exists: the spool has a server key already")
    try:
        public_path.parent.mkdir(exist_ok=True)
    except OSError as exc:
        raise KeyFileError(f"cannot make {public_path.parent}: {exc.strerror}") from exc
    key = nacl.public.PrivateKey.generate()
    public = public_text(X25519, bytes(key.public_key))
    secret = base64.b64encode(bytes(key)).decode("ascii")
    _write_private(private_out, {"kind": SERVER_KIND, "algorithm": X25519, "private": secret, "public": public})
    write_bytes(public_path, (public + "\n").encode())
    return public


def read_server_public(spool: Path) -> str:
    path = server_public_path(spool)
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        raise KeyFileError(f"{path} is missing: make the spool's key with `cutor-spool keys server`") from None
    parse_public(text, X25519)
    return text


def read_server_private(path: Path) -> nacl.public.PrivateKey:
    return _server_key(_read_private(path), path)


def _server_key(data: dict[str, Any], path: Path) -> nacl.public.PrivateKey:
    _expect_kind(data, SERVER_KIND, path)
    key = nacl.public.PrivateKey(_secret(data, "private", path))
    _check_public(data, public_text(X25519, bytes(key.public_key)), path)
    return key


# -- sealed values (env vars)


def seal(public: str, plaintext: bytes) -> str:
    """`plaintext` sealed to the X25519 public key `public`, base64: only its private key opens it."""
    box = nacl.public.SealedBox(nacl.public.PublicKey(parse_public(public, X25519)))
    return base64.b64encode(box.encrypt(plaintext)).decode("ascii")


def open_sealed(key: nacl.public.PrivateKey, sealed: str) -> bytes:
    try:
        return nacl.public.SealedBox(key).decrypt(base64.b64decode(sealed, validate=True))
    except (nacl.exceptions.CryptoError, binascii.Error, ValueError) as exc:
        raise SealError("a sealed value does not open with this server key (another key's, or changed)") from exc


# -- private key files


def _inside(path: Path, directory: Path) -> bool:
    """Whether `path` would land inside `directory`, symlinks resolved on both sides (the file
    itself need not exist yet)."""
    return path.resolve().is_relative_to(directory.resolve())


def _write_private(path: Path, data: dict[str, str]) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} exists: a key file is never overwritten") from None
    except OSError as exc:
        raise KeyFileError(f"cannot create {path}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, (json.dumps(data, indent=2) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_private(path: Path) -> dict[str, Any]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise KeyFileError(f"{path} is not a regular file")
        if mode & 0o077:
            raise KeyFileError(f"{path} is readable by others (mode {stat.S_IMODE(mode):04o}): chmod 600 it")
        raw = os.read(fd, 1 << 16)
    finally:
        os.close(fd)
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise KeyFileError(f"{path} is not a key file (JSON with a 'kind')")
    return data


def _expect_kind(data: dict[str, Any], kind: str, path: Path) -> None:
    if data.get("kind") != kind:
        raise KeyFileError(f"{path} is not a {kind} file")


def _secret(data: dict[str, Any], field: str, path: Path) -> bytes:
    try:
        raw = base64.b64decode(str(data.get(field, "")), validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) != 32:
        raise KeyFileError(f"{path}: {field!r} is not 32 bytes of base64")
    return raw


def _check_public(data: dict[str, Any], public: str, path: Path) -> None:
    if data.get("public", public) != public:
        raise KeyFileError(f"{path}: its 'public' does not belong to its secret key (the file was edited)")
