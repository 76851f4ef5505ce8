"""The binary cache inside the spool (`builds/cache/`), for executors with a Nix store of their own.

A builder exports every environment's closure with `nix copy --to file://…` signed with its own
key; an executor whose store lacks the paths realises them from this cache, and Nix checks the
signatures against the trusted keys. The secret key stays on the builder's host (default
`/var/lib/cutor-spool/nix-signing.key`, made on first start); the public half is published as
`builds/cache/keys/<name>.pub`. Executors trust `nix.trusted_public_keys` from spool.yaml when it
is set, else the published keys: the spool then vouches for itself, which is no weaker than the
rest of spool.yaml (whoever can write the spool already chooses the nixpkgs), and is said in the log.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from cutor_spool.atomic import write_bytes
from cutor_spool.builder import nixcmd, process
from cutor_spool.builder.nixcmd import NixSettings
from cutor_spool.config import NixConfig
from cutor_spool.errors import BuildError, ConfigError
from cutor_spool.layout import SpoolPaths

log = logging.getLogger(__name__)

DEFAULT_SIGNING_KEY = Path("/var/lib/cutor-spool/nix-signing.key")
KEY_NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")
_warned: set[str] = set()  # spools whose self-published keys were already reported


def cache_dir(paths: SpoolPaths) -> Path:
    return paths.builds.root / "cache"


def keys_dir(paths: SpoolPaths) -> Path:
    return cache_dir(paths) / "keys"


def public_from_secret(secret: str) -> str:
    """`name:base64(seed ‖ public)` (libsodium's ed25519 secret key) -> `name:base64(public)`."""
    name, _, data = secret.strip().partition(":")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"the signing key is not a Nix secret key ({exc})") from exc
    if not name or len(raw) != 64:
        raise ConfigError("the signing key is not a Nix secret key (name:base64 of 64 bytes)")
    return f"{name}:{base64.b64encode(raw[32:]).decode()}"


def ensure_signing_key(path: Path, settings: NixSettings, host: str | None = None) -> str:
    """Reads the builder's secret key, making one on first start; returns its public key."""
    if not path.exists():
        name = f"cutor-spool-{(host or socket.gethostname()).split('.')[0]}-1"
        if not KEY_NAME_RE.match(name):
            name = "cutor-spool-1"
        done = process.run(
            nixcmd.generate_key_argv(name),
            env=nixcmd.nix_env(settings, nixcmd.nix_config(settings)),
            deadline=time.monotonic() + 60,
        )
        if not done.ok:
            raise BuildError(f"cannot generate a signing key: {done.error_text()}")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            pass  # another builder on this host made it first: use theirs
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(done.stdout.strip() + b"\n")
            log.warning("made a new signing key for the binary cache: %s", path)
    try:
        secret = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the signing key {path}: {exc}") from exc
    return public_from_secret(secret)


def publish_public_key(paths: SpoolPaths, public: str) -> None:
    name = public.partition(":")[0]
    if not KEY_NAME_RE.match(name):
        raise ConfigError(f"signing key name {name!r}: use letters, digits, '.', '_' and '-'")
    directory = keys_dir(paths)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{name}.pub"
    try:
        if target.read_text(encoding="ascii").strip() == public:
            return
    except (OSError, UnicodeDecodeError):
        pass
    write_bytes(target, (public + "\n").encode())


def published_keys(paths: SpoolPaths) -> list[str]:
    found = []
    try:
        entries = sorted(keys_dir(paths).glob("*.pub"))
    except OSError:
        return []
    for entry in entries:
        try:
            text = entry.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if text and ":" in text and len(text) < 200:
            found.append(text)
    return found


def trusted_keys(nix: NixConfig, paths: SpoolPaths) -> tuple[str, ...]:
    if nix.trusted_public_keys:
        return tuple(nix.trusted_public_keys)
    keys = published_keys(paths)
    if keys and str(paths.root) not in _warned:
        _warned.add(str(paths.root))
        log.warning(
            "trusting the binary cache keys published in %s (set nix.trusted_public_keys to pin them)", keys_dir(paths)
        )
    return tuple(keys)


@dataclass(frozen=True)
class Pruned:
    narinfos: int
    nars: int
    bytes: int


def _narinfo_fields(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            out[key] = value
    return out


def prune(directory: Path, drop: set[str], keep: set[str], *, min_age: float, now: float | None = None) -> Pruned:
    """Deletes the narinfos of `drop - keep` store paths, then NAR files no narinfo refers to.
    Files younger than `min_age` are left alone: a builder may be uploading them right now (Nix
    writes the NAR first, then its narinfo)."""
    now = time.time() if now is None else now
    narinfos = nars = freed = 0
    referenced: set[str] = set()
    try:
        infos = list(directory.glob("*.narinfo"))
    except OSError:
        return Pruned(0, 0, 0)
    for info in infos:
        fields = _narinfo_fields(info)
        store_path = fields.get("StorePath", "")
        if store_path in drop and store_path not in keep:
            try:
                freed += info.stat().st_size
                info.unlink()
                narinfos += 1
                continue
            except FileNotFoundError:
                continue
        if fields.get("URL"):
            referenced.add(fields["URL"])
    nar_dir = directory / "nar"
    try:
        nar_files = list(nar_dir.iterdir())
    except OSError:
        nar_files = []
    for nar in nar_files:
        if f"nar/{nar.name}" in referenced:
            continue
        try:
            st = nar.stat()
            if now - st.st_mtime < min_age:
                continue
            nar.unlink()
        except FileNotFoundError:
            continue
        nars += 1
        freed += st.st_size
    return Pruned(narinfos, nars, freed)
