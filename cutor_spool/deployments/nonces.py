"""Payers' nonces: the (keyid, nonce) pairs that paid already, under `<spool>/ledger/nonces/`.

A payer's signature (deployments/payers.py, docs/payers.md) carries a nonce so that it pays once.
`NonceStore.use` records the pair with an atomic, exclusive link(2); a second use is `Replayed`,
unless it is the same spool entry trying again. A nonce is remembered only as long as its
signature could still verify, which is why the window a signature is accepted in (MAX_AGE,
CLOCK_SKEW) is defined here, where both the verifier and the store read it.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import socket
from pathlib import Path

from cutor_spool.atomic import fsync_dir
from cutor_spool.deployments.errors import BadSignature

__all__ = ["CLOCK_SKEW", "MAX_AGE", "NonceStore", "Replayed"]

MAX_AGE = 300.0  # how old a signature may be by default (its `created`), in seconds
CLOCK_SKEW = 30.0  # how far the hosts' clocks may differ


class Replayed(BadSignature):
    """The signature's nonce paid for another request already."""


class NonceStore:
    """The nonces that paid already: `<spool>/ledger/nonces/<bucket>/<sha256(keyid, nonce)>`,
    the bucket being the minute of the signature's `created`. One file per nonce, made whole in a
    private name and then link(2)ed to its own: link is atomic and exclusive on every file system,
    NFS included (open(2): "use link(2) to make a link to the lockfile ... check if its link count
    has increased to 2"), and needs no lock. A bucket is removed whole once every signature it can
    hold is older than max_age + CLOCK_SKEW (and another CLOCK_SKEW for the hosts' clocks): such a
    signature is refused by age before its nonce is looked up, so forgetting it lets no replay
    through."""

    BUCKET = 60

    def __init__(self, spool_root: Path, *, max_age: float = MAX_AGE) -> None:
        self.root = spool_root / "ledger" / "nonces"
        self.max_age = max_age
        self.root.mkdir(parents=True, exist_ok=True)

    def use(self, keyid: str, nonce: str, created: int, now: float, *, entry: str | None = None) -> None:
        """Records the nonce, or raises Replayed if it was used already (by another entry than
        `entry`). BadSignature if `created` is too old for the store to remember it."""
        if created + self.max_age + CLOCK_SKEW < now:
            raise BadSignature(f"the signature is {now - created:.0f} s old: at most {self.max_age:.0f} s are accepted")
        bucket = self.root / str(created // self.BUCKET)
        bucket.mkdir(exist_ok=True)
        name = hashlib.sha256(f"{keyid}\n{nonce}".encode()).hexdigest()
        record = f"{keyid} {nonce} {created} {entry or '-'}\n".encode()
        private = bucket / f".{name}.{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(4)}"
        with open(private, "xb") as out:
            out.write(record)
            out.flush()
            os.fsync(out.fileno())
        try:
            try:
                os.link(private, bucket / name)
                fsync_dir(bucket)  # the link is the record: it must outlive a crash
            except FileExistsError:
                if os.stat(private).st_nlink == 2:  # NFS: the link was made, its reply was lost
                    return
                if entry is not None and _record_entry(bucket / name) == entry:
                    return  # the same entry again (a retry after a lost lease): not a replay
                raise Replayed(f"the nonce {nonce!r} of {keyid} paid for another request already") from None
        finally:
            private.unlink(missing_ok=True)

    def sweep(self, now: float) -> int:
        """Removes the buckets whose signatures are all too old to verify; returns how many nonces
        went with them."""
        removed = 0
        for bucket in self.root.iterdir():
            if not bucket.name.isdigit():
                continue
            # CLOCK_SKEW twice: the sweeper's clock may run ahead of the verifier's, on another host
            if (int(bucket.name) + 1) * self.BUCKET + self.max_age + 2 * CLOCK_SKEW < now:
                removed += sum(1 for name in os.listdir(bucket) if not name.startswith("."))
                shutil.rmtree(bucket, ignore_errors=True)
        return removed


def _record_entry(path: Path) -> str | None:
    try:
        fields = path.read_text().split()
    except OSError:
        return None
    return fields[3] if len(fields) == 4 and fields[3] != "-" else None
