"""Idempotency keys of invocations: one entry per (deployment, payer, key), whichever gateway or
host receives the retry.

`invocations/keys/<sha256>` is a small file holding the id of the entry the key was first used
for; the name is the SHA-256 of the deployment's CID, the payer's scope and the client's key (so a
client's key is never a path, and two payers' keys never meet). It is made by `link(2)` of a
complete temporary file: exclusive like O_EXCL (NFSv3 included, where O_EXCL was not always
atomic), and a reader never sees it empty. The one whose link succeeds drops the entry; every
other finds the key and answers from that entry.

The key is made after the entry is written in `tmp/` and before it is renamed into `incoming/`,
so the window in which a key names an entry that is nowhere is one rename long; a key whose entry
never appears (its gateway died in that window), or whose entry was withdrawn unclaimed or ended
in `error` (the system's fault), is released with `release`, so that a retry runs anew.

The key also holds the request's fingerprint (a hash of its method, path, query and body): a
retry with the same key but another request is refused (422) instead of answered with the first
one's answer.

Keys are forgotten `deployments.idempotency_ttl` after they were made (24 hours by default, as
Stripe keeps its keys): `prune`, run by the executors' housekeeping; a retry after that runs anew.

`payer` is the seam for the escrow: today every invocation is scoped to its deployment's owner
(`OWNER_SCOPE`); once payers are verified, the gateway passes the verified payer's key id.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from pathlib import Path
from typing import NamedTuple

from cutor_spool.layout import SpoolPaths

KEYS_DIR = "keys"
OWNER_SCOPE = "owner"
MAX_KEY = 255  # bytes of an Idempotency-Key header's value
_MAX_RECORD = 512
_ENTRY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


def keys_dir(paths: SpoolPaths) -> Path:
    return paths.invocations.root / KEYS_DIR


def key_path(paths: SpoolPaths, deployment: str, key: str, payer: str | None = None) -> Path:
    scope = payer if payer is not None else OWNER_SCOPE
    digest = hashlib.sha256("\0".join((deployment, scope, key)).encode()).hexdigest()
    return keys_dir(paths) / digest


class Record(NamedTuple):
    entry_id: str
    fingerprint: str  # what the request asked (method, path, query, body): a hash, "" if unknown


def remember(path: Path, entry_id: str, fingerprint: str = "") -> Record | None:
    """Records `entry_id` (and the request's fingerprint) under the key `path`; returns None when
    this call made the key, else the record the key already holds."""
    path.parent.mkdir(mode=0o755, exist_ok=True)
    temporary = path.parent / f".{path.name}.{secrets.token_hex(6)}"
    with open(temporary, "x", encoding="ascii") as out:
        out.write(f"{entry_id}\n{fingerprint}\n")
        out.flush()
        os.fsync(out.fileno())
    try:
        while True:
            try:
                os.link(temporary, path)
            except FileExistsError:
                first = record(path)
                if first is None:  # released between our link and our read: try again
                    continue
                return first
            return None
    finally:
        os.unlink(temporary)


def record(path: Path) -> Record | None:
    """What a key holds, or None when there is no such key (or it names no valid id)."""
    try:
        with open(path, "rb") as stream:
            text = stream.read(_MAX_RECORD).decode("ascii", "replace")
    except FileNotFoundError:
        return None
    entry_id, _, rest = text.partition("\n")
    if not _ENTRY_ID.fullmatch(entry_id):
        return None
    return Record(entry_id, rest.strip())


def recorded(path: Path) -> str | None:
    """The entry id a key names, or None when there is no such key."""
    found = record(path)
    return None if found is None else found.entry_id


def release(path: Path, entry_id: str) -> None:
    """Removes the key if it still names `entry_id` (never a newer key of the same name)."""
    if recorded(path) != entry_id:
        return
    # Renamed aside first: of two releasers, one wins; a key made anew meanwhile is not removed
    # unless it names the same entry, which only this entry's own gateways do.
    aside = path.parent / f".{path.name}.released.{secrets.token_hex(6)}"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    if recorded(aside) != entry_id:  # a new key slipped in between: put it back
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
    os.unlink(aside)


def prune(paths: SpoolPaths, now: float, ttl: float) -> int:
    """Removes the keys made more than `ttl` seconds before `now` (by their mtime), and the
    temporary or set-aside files of makers and releasers that died. Idempotent: any number of
    executors may run it at once. Returns how many files it removed."""
    removed = 0
    try:
        with os.scandir(keys_dir(paths)) as entries:
            for entry in entries:
                try:
                    old = entry.stat(follow_symlinks=False).st_mtime < now - ttl
                    if old and entry.is_file(follow_symlinks=False):
                        os.unlink(entry.path)
                        removed += 1
                except FileNotFoundError:
                    continue
    except FileNotFoundError:
        return 0
    return removed
