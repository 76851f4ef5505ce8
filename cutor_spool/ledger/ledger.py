"""The escrow: accounts, holds placed before a run, settlements after it (docs/ledger.md).

    ledger/accounts/<account>/   its journal and checkpoints (journal.py)
    ledger/holds/<hold_id>.json  which account a hold id belongs to, and hints (models.HoldIndex)
    ledger/tmp/                  temporaries of exclusive creates

Every change of money is a record appended to one account's journal by `Journal.transact`'s
compare-and-swap, which decides again on every lost race: a hold is refused there (and nothing is
written) when the account cannot cover it, a hold id that is live already returns its hold, a
settlement of a hold that has ended returns the record that ended it. The hold index is written
around the journal's records, never instead of them, and only ever read as a hint that is checked.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cutor_spool.atomic import write_bytes
from cutor_spool.errors import SpoolIOError
from cutor_spool.ledger.journal import Journal, Seen, create_exclusive
from cutor_spool.ledger.models import (
    AlreadySettled,
    AuditReport,
    Balance,
    Hold,
    HoldIndex,
    InsufficientFunds,
    LedgerError,
    Record,
    UnknownHold,
    check_account,
    check_hold_id,
)
from cutor_spool.ledger.state import State

LEDGER_DIR = "ledger"
STALE_TEMPORARY = 3600.0  # a temporary this old is a dead writer's (a live one links within seconds)


class Ledger:
    def __init__(self, spool_root: Path) -> None:
        self.root = spool_root / LEDGER_DIR
        self.holds = self.root / "holds"
        self.tmp = self.root / "tmp"
        self._journals: dict[str, Journal] = {}

    def journal(self, account: str) -> Journal:
        journal = self._journals.get(account)
        if journal is None:
            journal = self._journals[account] = Journal(self.root, check_account(account))
        return journal

    def _ready(self) -> None:
        for directory in (self.root / "accounts", self.holds, self.tmp):
            directory.mkdir(parents=True, exist_ok=True)

    # -- money in

    def deposit(self, account: str, amount: int, *, note: str = "") -> Record:
        if amount <= 0:
            raise LedgerError(f"a deposit must be positive, not {amount}")
        self._ready()
        fields = {"kind": "deposit", "amount": amount, "note": note, "time": time.time()}
        record = self.journal(account).transact(lambda _state, _seen: fields)
        assert isinstance(record, Record)
        return record

    # -- holds

    def hold(self, account: str, hold_id: str, amount: int, *, ttl: float, holder: str) -> Hold:
        """Reserves `amount` for `hold_id` until it is settled, released or expires (after `ttl`
        seconds unless renewed). InsufficientFunds writes nothing; a live hold of the same id is
        returned as it is; a settled one raises AlreadySettled (a released or expired one may be
        held again: its request failed for the system's fault and is retried)."""
        journal = self.journal(account)
        check_hold_id(hold_id)
        if amount < 0 or ttl <= 0:
            raise LedgerError(f"a hold needs an amount >= 0 and a ttl > 0 (got {amount}, {ttl})")
        self._ready()
        state = journal.load()
        if state.available < amount and self._index(hold_id) is None and not self.expire(accounts=[journal.account]):
            raise InsufficientFunds(journal.account, state.available, amount)  # a new id refused before any write
        index, made = self._claim_index(journal, hold_id, amount, ttl, holder)
        try:
            try:
                record = self._place(journal, index, amount, ttl, holder)
            except InsufficientFunds:
                if not self.expire(accounts=[journal.account]):
                    raise
                record = self._place(journal, index, amount, ttl, holder)  # a dead holder's funds came back
        except BaseException:
            if made:
                self._unlink_index(hold_id)  # nothing of this id was written: leave nothing behind
            raise
        expires = max(record.expires or 0.0, index.expires)
        self._write_index(
            index.model_copy(update={"since": record.seq - 1, "seq": record.seq, "end": None, "expires": expires})
        )
        return Hold(
            hold_id=hold_id,
            account=journal.account,
            amount=record.amount,
            expires=expires,
            holder=record.holder,
            seq=record.seq,
        )

    def _place(self, journal: Journal, index: HoldIndex, amount: int, ttl: float, holder: str) -> Record:
        def decide(state: State, seen: Seen) -> dict[str, Any] | Record:
            live = state.holds.get(index.hold_id)
            if live is not None:
                return _must(journal.record(live.seq))
            ended = seen.upto(state.seq).last_end
            if ended is not None and ended.kind == "settle":
                raise AlreadySettled(ended)
            if state.available < amount:
                raise InsufficientFunds(journal.account, state.available, amount)
            now = time.time()
            return {
                "kind": "hold",
                "hold_id": index.hold_id,
                "amount": amount,
                "expires": now + ttl,
                "holder": holder,
                "time": now,
            }

        record = journal.transact(decide, watch=index.hold_id, since=index.since)
        assert isinstance(record, Record)
        return record

    def renew(self, hold_id: str, ttl: float) -> None:
        """The holder says it is alive: its hold now expires `ttl` seconds from now. UnknownHold if
        the hold is not live (it expired: the holder should stop, nothing will be charged)."""
        index, journal = self._lookup(hold_id)
        live = journal.load().holds.get(hold_id)
        if live is None:
            raise UnknownHold(f"hold {hold_id} is not live (settled, released or expired)")
        self._write_index(index.model_copy(update={"expires": time.time() + ttl, "seq": live.seq}))

    def settle(self, hold_id: str, cost: int, *, note: str = "", items: list[tuple[str, int]] | None = None) -> Record:
        """Charges min(cost, the hold's amount) and releases the rest. Idempotent: a hold that has
        ended already (settled, released, expired) returns the record that ended it, charging
        nothing. `items`: a block's requests and their charges, which must add up to `cost`."""
        if cost < 0:
            raise LedgerError(f"a cost must not be negative, not {cost}")
        if items is not None and sum(c for _, c in items) != cost:
            raise LedgerError(f"a block's items add up to {sum(c for _, c in items)}, not {cost}")

        def fields(held: int) -> dict[str, Any]:
            if items is not None and cost > held:
                raise LedgerError(f"a block's charges ({cost}) are above its hold ({held})")
            return {"kind": "settle", "amount": min(cost, held), "note": note, "items": items}

        return self._end(hold_id, fields)

    def release(self, hold_id: str, *, reason: str) -> Record:
        """Ends the hold charging nothing (the system failed the request). Idempotent."""
        return self._end(hold_id, lambda _held: {"kind": "release", "amount": 0, "reason": reason})

    def _end(self, hold_id: str, fields: Any) -> Record:
        index, journal = self._lookup(hold_id)
        final = self._cached_settlement(index, journal)
        if final is not None:
            return final

        def decide(state: State, seen: Seen) -> dict[str, Any] | Record:
            live = state.holds.get(hold_id)
            if live is not None:
                return {**fields(live.amount), "hold_id": hold_id, "held": live.amount, "time": time.time()}
            if (ended := seen.upto(state.seq).last_end) is not None:
                return ended
            raise UnknownHold(f"hold {hold_id} was never placed")

        record = journal.transact(decide, watch=hold_id, since=index.since)
        assert isinstance(record, Record)
        if index.end != record.seq:
            self._write_index(index.model_copy(update={"end": record.seq}))
        return record

    def settled(self, hold_id: str) -> Record | None:
        """The record that ended the hold (settle or release), or None while it is live or if it
        was never placed."""
        try:
            index, journal = self._lookup(hold_id)
        except UnknownHold:
            return None
        final = self._cached_settlement(index, journal)
        if final is not None:
            return final
        state = journal.load()
        if hold_id in state.holds:
            return None
        return Seen(hold_id, index.since, journal).upto(state.seq).last_end

    def _cached_settlement(self, index: HoldIndex, journal: Journal) -> Record | None:
        """The settlement the index points to, checked (a settlement is final: no hold of its id
        can follow it, so the hint cannot be out of date once it names one)."""
        if index.end is None:
            return None
        cached = journal.record(index.end)
        return cached if cached is not None and cached.hold_id == index.hold_id and cached.kind == "settle" else None

    # -- reading

    def balance(self, account: str) -> Balance:
        state = self.journal(account).load()
        return Balance(account=check_account(account), seq=state.seq, **state.totals().model_dump())

    def history(self, account: str, *, limit: int | None = None) -> list[Record]:
        journal = self.journal(account)
        head = journal.load().seq
        start = 1 if limit is None else max(1, head - limit + 1)
        return list(journal.records(start, head))

    def accounts(self) -> list[str]:
        try:
            return sorted(os.listdir(self.root / "accounts"))
        except FileNotFoundError:
            return []

    # -- expiry and recovery

    def expire(self, now: float | None = None, *, accounts: list[str] | None = None) -> list[str]:
        """Releases every live hold past its expiry (the holder's renewals count), with reason
        "expired"; returns their ids. Also removes what dead writers left: indexes of holds whose
        record was never written, and old temporaries."""
        now = time.time() if now is None else now
        expired = []
        for account in accounts if accounts is not None else self.accounts():
            journal = self.journal(account)
            for hold_id, live in sorted(journal.load().holds.items()):
                if live.expires > now:
                    continue  # renewals only ever push the expiry later
                index = self._index(hold_id)
                renewed = index.expires if index is not None and index.account == account else 0.0
                if renewed <= now and self._expire_one(journal, hold_id, live.seq):
                    expired.append(hold_id)
        if accounts is None:
            self._sweep(now)
        return expired

    def _expire_one(self, journal: Journal, hold_id: str, seq: int) -> bool:
        def decide(state: State, _seen: Seen) -> dict[str, Any] | None:
            live = state.holds.get(hold_id)
            if live is None or live.seq != seq:
                return None  # settled, released or renewed into another hold meanwhile
            return {
                "kind": "release",
                "amount": 0,
                "hold_id": hold_id,
                "held": live.amount,
                "reason": "expired",
                "time": time.time(),
            }

        return journal.transact(decide) is not None

    def _sweep(self, now: float) -> None:
        for path in _listdir(self.tmp):
            _remove_if_older(path, now - STALE_TEMPORARY)
        for path in _listdir(self.holds):
            index = self._read_index(path)
            if index is None or index.seq is not None or index.expires > now:
                continue
            try:
                journal = self.journal(index.account)
            except LedgerError:
                continue  # not an account: `ledger audit` reports it
            seen = Seen(index.hold_id, index.since, journal).upto(journal.load().seq)
            if seen.last_hold is None:  # a writer died before its hold's record: nothing to keep
                self._unlink_index(index.hold_id)

    def prune_holds(self, now: float, older_than: float) -> int:
        """Removes the indexes of holds that ended (settled, released, expired) and were last
        written more than `older_than` seconds before `now`: the journal keeps their records, and
        after that time no retry of their entry is expected (an index found gone makes a new hold
        of the same id a new hold). A live hold's index stays, whatever its age. Idempotent: any
        number of executors may run it at once. Returns how many it removed."""
        removed = 0
        states: dict[str, State | None] = {}
        for path in _listdir(self.holds):
            try:
                if path.lstat().st_mtime >= now - older_than:
                    continue
            except FileNotFoundError:
                continue
            index = self._read_index(path)
            if index is None or index.seq is None:
                continue  # not an index (`ledger audit` says so), or a dead writer's (`_sweep`)
            if index.account not in states:
                try:
                    states[index.account] = self.journal(index.account).load()
                except LedgerError:
                    states[index.account] = None
            state = states[index.account]
            if state is None or index.hold_id in state.holds or path.name != f"{index.hold_id}.json":
                continue
            self._unlink_index(index.hold_id)
            removed += 1
        return removed

    def audit(self) -> AuditReport:
        from cutor_spool.ledger.audit import audit

        return audit(self)

    # -- the hold index

    def _index_path(self, hold_id: str) -> Path:
        return self.holds / f"{check_hold_id(hold_id)}.json"

    def _index(self, hold_id: str) -> HoldIndex | None:
        return self._read_index(self._index_path(hold_id))

    def _read_index(self, path: Path) -> HoldIndex | None:
        try:
            return HoldIndex.model_validate_json(path.read_bytes())
        except (FileNotFoundError, ValidationError):
            return None
        except OSError as exc:
            raise SpoolIOError(f"cannot read {path}: {exc.strerror}") from exc

    def _lookup(self, hold_id: str) -> tuple[HoldIndex, Journal]:
        index = self._index(hold_id)
        if index is None:
            raise UnknownHold(f"hold {hold_id} was never placed")
        return index, self.journal(index.account)

    def _claim_index(
        self, journal: Journal, hold_id: str, amount: int, ttl: float, holder: str
    ) -> tuple[HoldIndex, bool]:
        """The hold id's index, made exclusively if there is none (True: this call made it)."""
        index = self._index(hold_id)
        made = False
        if index is None:
            since = journal.load().seq  # every record of this id will come after it
            fresh = HoldIndex(
                hold_id=hold_id,
                account=journal.account,
                since=since,
                amount=amount,
                holder=holder,
                expires=time.time() + ttl,
            )
            made = create_exclusive(self.tmp, self._index_path(hold_id), fresh.model_dump_json().encode())
            index = fresh if made else self._index(hold_id)
            if index is None:
                raise LedgerError(f"the index of hold {hold_id} is unreadable: {self._index_path(hold_id)}")
        if index.account != journal.account:
            raise LedgerError(f"hold id {hold_id} belongs to another account ({index.account})")
        return index, made

    def _write_index(self, index: HoldIndex) -> None:
        """Rewrites an index with new hints (atomically; a lost rewrite only makes readers scan)."""
        write_bytes(self._index_path(index.hold_id), index.model_dump_json().encode())

    def _unlink_index(self, hold_id: str) -> None:
        try:
            os.unlink(self._index_path(hold_id))
        except FileNotFoundError:
            pass


def _must(record: Record | None) -> Record:
    if record is None:
        raise LedgerError("a live hold's record is missing from its journal")
    return record


def _listdir(directory: Path) -> list[Path]:
    try:
        return [directory / name for name in os.listdir(directory)]
    except FileNotFoundError:
        return []


def _remove_if_older(path: Path, cutoff: float) -> None:
    try:
        if path.lstat().st_mtime < cutoff:
            path.unlink()
    except FileNotFoundError:
        pass
