"""One account's journal: numbered records, each created exclusively, and checkpoints.

    ledger/accounts/<account>/journal/<seq // 10000>/<seq>.json   record `seq` (immutable)
    ledger/accounts/<account>/checkpoints/<seq>.json              the fold at record `seq` (immutable)
    ledger/tmp/                                                   temporaries, linked into place

The compare-and-swap: a writer folds the journal to its head `n`, decides the next record from
that state (refusing a hold that would take the account below zero), writes it completely to a
temporary, fsyncs it, and `link`s it to `<n+1>.json`. link() fails with EEXIST if any writer, on
any host, made `<n+1>` first: the loser reads the records it missed and decides again. A record
therefore always follows from the one before it, and one that would overdraw is never written.
Nothing is locked, so a writer that dies holds nothing up (docs/ledger.md).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cutor_spool.atomic import fsync_dir, write_fd
from cutor_spool.errors import SpoolIOError
from cutor_spool.ledger.models import LedgerCorrupt, Record
from cutor_spool.ledger.state import State, digest

CHUNK = 10_000  # records per journal directory: no directory grows without bound
CHECKPOINT_EVERY = 256  # a checkpoint at every record numbered a multiple of this


def create_exclusive(tmp_dir: Path, path: Path, data: bytes) -> bool:
    """Makes `path` with `data` unless it exists: True if this call made it. The bytes are written
    and fsynced under a temporary name first, so that `path` is complete whenever it exists; then
    link() is the exclusive create (atomic on NFS too, where O_EXCL was not always). A retransmitted
    LINK whose first try succeeded answers EEXIST: the temporary's link count tells it apart."""
    tmp = tmp_dir / f".tmp-{path.name}-{secrets.token_hex(8)}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            write_fd(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            try:
                os.link(tmp, path)
                made = True
            except FileExistsError:
                made = os.stat(tmp).st_nlink == 2
        finally:
            os.unlink(tmp)
        if made:
            fsync_dir(path.parent)
        return made
    except FileNotFoundError:
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
            return create_exclusive(tmp_dir, path, data)
        raise SpoolIOError(f"cannot create {path}: {tmp_dir} is missing") from None
    except OSError as exc:
        raise SpoolIOError(f"cannot create {path}: {exc.strerror}") from exc


def encode(record: Record) -> bytes:
    fields = record.model_dump()
    if fields.get("items") is None:
        fields.pop("items", None)  # only a block's settle has them: every other record as it was
    return (json.dumps(fields, sort_keys=True, separators=(",", ":")) + "\n").encode()


@dataclass
class Seen:
    """One hold id's last hold and last ending among the records after `since` (the index's: no
    record of the id comes before it). Read only when asked (`upto`), and then only the records
    not read yet: a settlement of a live hold never scans."""

    hold_id: str | None
    since: int = 0
    journal: Journal | None = None
    last_hold: Record | None = None
    last_end: Record | None = None

    def see(self, record: Record) -> None:
        if self.hold_id is None or record.hold_id != self.hold_id:
            return
        if record.kind == "hold":
            self.last_hold, self.last_end = record, None
        else:
            self.last_end = record

    def upto(self, seq: int) -> Seen:
        if self.journal is not None and self.since < seq:
            for record in self.journal.records(self.since + 1, seq):
                self.see(record)
            self.since = seq
        return self


# What a transaction decides from the state: a new record's fields, an existing record that is the
# answer already (idempotency), or None (nothing to write, the caller looks again).
Decision = dict[str, Any] | Record | None


class Journal:
    def __init__(self, ledger_root: Path, account: str) -> None:
        self.account = account
        self.dir = ledger_root / "accounts" / account
        self.tmp = ledger_root / "tmp"
        self._journal = str(self.dir / "journal")
        # The state at the last record this process read or wrote. Records never change, so it is
        # moved forward from there instead of from a checkpoint (`ledger audit` reads them all).
        self._cached: State | None = None

    def path(self, seq: int) -> Path:
        return Path(f"{self._journal}/{seq // CHUNK:06d}/{seq:012d}.json")

    @property
    def checkpoints(self) -> Path:
        return self.dir / "checkpoints"

    def raw(self, seq: int) -> bytes | None:
        try:
            return self.path(seq).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SpoolIOError(f"cannot read {self.path(seq)}: {exc.strerror}") from exc

    def parse(self, seq: int, raw: bytes) -> Record:
        try:
            record = Record.model_validate_json(raw)
        except ValidationError as exc:
            raise LedgerCorrupt(f"{self.path(seq)} is not a journal record: {exc.errors()[0]['msg']}") from None
        if record.seq != seq or record.account != self.account:
            raise LedgerCorrupt(f"{self.path(seq)} says it is record {record.seq} of {record.account}")
        return record

    def record(self, seq: int) -> Record | None:
        raw = self.raw(seq)
        return None if raw is None else self.parse(seq, raw)

    def records(self, start: int, stop: int | None = None) -> Iterator[Record]:
        """Records `start`, `start + 1`, … up to `stop` (inclusive) or the head."""
        seq = start
        while stop is None or seq <= stop:
            record = self.record(seq)
            if record is None:
                return
            yield record
            seq += 1

    # -- folding

    def load(self, *, checkpoints: bool = True) -> State:
        """The state at the head: from this process's last state, or else from the last checkpoint
        that matches its record, then forward. `checkpoints=False`: from record 1."""
        if not checkpoints:
            return self.advance(State(), remember=False)
        start = self._cached.copy() if self._cached is not None else self.checkpoint()
        return self.advance(start or State())

    def advance(self, state: State, watch: Callable[[Record], None] | None = None, *, remember: bool = True) -> State:
        """Moves `state` (in place) past every record after it; LedgerCorrupt on a record that does
        not follow from the state (`ledger audit` says more). Whoever reads a record whose number
        is a multiple of CHECKPOINT_EVERY writes the checkpoint there, if no one has."""
        while (raw := self.raw(state.seq + 1)) is not None:
            record = self.parse(state.seq + 1, raw)
            problems = state.apply(record, digest(raw))
            if problems:
                raise LedgerCorrupt("; ".join(problems) + " (run `cutor-spool ledger audit`)")
            if watch is not None:
                watch(record)
            if remember and state.seq % CHECKPOINT_EVERY == 0:
                self.write_checkpoint(state)
        if remember:
            self._cached = state.copy()
        return state

    def checkpoint(self) -> State | None:
        """The newest checkpoint whose record is there with the digest it names (None if none)."""
        try:
            names = sorted((n for n in os.listdir(self.checkpoints) if n.endswith(".json")), reverse=True)
        except FileNotFoundError:
            return None
        for name in names:
            try:
                state = State.from_json(json.loads((self.checkpoints / name).read_bytes()))
            except (OSError, ValueError, KeyError, TypeError):
                continue
            raw = self.raw(state.seq)
            if raw is not None and digest(raw) == state.digest:
                return state
        return None

    def write_checkpoint(self, state: State) -> None:
        path = self.checkpoints / f"{state.seq:012d}.json"
        if path.exists():
            return
        data = (json.dumps(state.to_json(), sort_keys=True) + "\n").encode()
        try:
            create_exclusive(self.tmp, path, data)
        except SpoolIOError:
            pass  # a checkpoint only makes reads faster

    # -- writing

    def transact(
        self, decide: Callable[[State, Seen], Decision], *, watch: str | None = None, since: int = 0
    ) -> Record | None:
        """Runs `decide` on the head's state until the record it asks for is linked in as the next
        one, or it answers without writing. `watch`: a hold id whose records after `since` `decide`
        may look at (`seen.upto(state.seq)`), checkpoint or not."""
        state = self.load()
        seen = Seen(watch, since, self)
        while True:
            decision = decide(state, seen)
            if decision is None or isinstance(decision, Record):
                return decision
            record, after = self._next(state, decision)
            data = encode(record)
            if create_exclusive(self.tmp, self.path(record.seq), data):
                after.digest = digest(data)
                if after.seq % CHECKPOINT_EVERY == 0:
                    self.write_checkpoint(after)
                self._cached = after
                return record
            self.advance(state)

    def _next(self, state: State, fields: dict[str, Any]) -> tuple[Record, State]:
        """The record `fields` make after `state`, and the state after it."""
        draft = Record.model_validate(
            {**fields, "seq": state.seq + 1, "prev": state.digest, "account": self.account, "after": state.totals()}
        )
        after = state.copy()
        after.apply(draft, "")
        return draft.model_copy(update={"after": after.totals()}), after
