"""The front page's Ledger section (docs/ledger.md): every account's balance, and the recent
charges (settlements, releases, expiries) across accounts.

What it reads, and how often: the page keeps, per account, the state the journal folds to at the
last record it read and that account's last RECENT endings, in `status/_ledger.json`. A
regeneration then costs one `stat` per account (is there a record after the one we read?) and reads
only the records that are new, checking each as every reader of the journal does
(`Journal.advance`); an account seen for the first time starts from its newest checkpoint (as
`Ledger.balance` does) and looks back at most LOOKBACK records before it for its recent endings.
The page never writes into `ledger/` (no checkpoint either: `remember=False`), and never runs the
audit: the head record's number is shown, `cutor-spool ledger audit` checks the books.

What it shows: accounts (public keys), amounts, times, hold ids (invocation ids), release reasons.
Never a deposit's note (the operator's), a hold's holder, or anything of payers' nonces.
An account whose journal cannot be read (not an account's name, a record that does not parse or
does not follow from the one before) is listed as such; the rest of the page is unaffected.
"""

from __future__ import annotations

import json
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cutor_spool.atomic import write_bytes
from cutor_spool.errors import CutorError
from cutor_spool.ledger import Ledger, LedgerError, Record
from cutor_spool.ledger.journal import Journal
from cutor_spool.ledger.state import State
from cutor_spool.web_status.model import clip
from cutor_spool.web_status.render import iso_now

CACHE_NAME = "_ledger.json"
CACHE_FORMAT = 1
RECENT = 50  # endings kept per account (the page shows the newest `shown` across accounts)
LOOKBACK = 128  # records read before an account's checkpoint, the first time, for its recent endings
CHARGES_SHOWN = 100  # the newest endings across accounts on the page and in status.json
REASON_LIMIT = 200


def _ending(record: Record) -> dict[str, Any]:
    """A settlement or release as the page keeps it: no note, no holder."""
    return {
        "seq": record.seq,
        "time": record.time,
        "hold_id": record.hold_id,
        "kind": "expired" if record.kind == "release" and record.reason == "expired" else record.kind,
        "charged": record.amount,
        "held": record.held,
        "reason": clip(record.reason, REASON_LIMIT) if record.kind == "release" else None,
    }


@dataclass
class Account:
    state: State | None = None
    endings: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT))
    problem: str | None = None

    def see(self, record: Record) -> None:
        if record.kind in ("settle", "release"):
            self.endings.append(_ending(record))

    def to_json(self) -> dict[str, Any]:
        return {
            "state": None if self.state is None else self.state.to_json(),
            "endings": list(self.endings),
            "problem": self.problem,
        }

    @classmethod
    def from_json(cls, data: Any) -> Account | None:
        try:
            state = None if data["state"] is None else State.from_json(data["state"])
            return cls(state, deque(data["endings"], maxlen=RECENT), data["problem"])
        except (KeyError, TypeError, ValueError):
            return None


def _load_cache(path: Path) -> dict[str, Account]:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or not isinstance(data.get("accounts"), dict):
        return {}
    out = {}
    for name, item in data["accounts"].items():
        account = Account.from_json(item)
        if account is not None:
            out[name] = account
    return out


def _nothing_new(journal: Journal, state: State) -> bool:
    """One stat: no record after the one this state is at (records are only ever added)."""
    try:
        os.lstat(journal.path(state.seq + 1))
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return False


def _first_read(journal: Journal) -> Account:
    account = Account()
    state = journal.checkpoint() or State()
    for record in journal.records(max(1, state.seq - LOOKBACK + 1), state.seq):
        account.see(record)
    journal.advance(state, account.see, remember=False)
    account.state = state
    return account


def _refresh(ledger: Ledger, name: str, known: Account | None) -> Account:
    fresh = _read(ledger, name, known)
    if known is not None and fresh is not known and fresh.problem is not None and fresh.problem == known.problem:
        return known  # the same problem as last time: nothing to save
    return fresh


def _read(ledger: Ledger, name: str, known: Account | None) -> Account:
    if known is not None and known.state is not None:
        journal = Journal(ledger.root, name)  # its name was checked when it was first read
        if _nothing_new(journal, known.state):
            return known
        state = known.state.copy()
        fresh = Account(state, deque(known.endings, maxlen=RECENT))
        try:
            journal.advance(state, fresh.see, remember=False)
        except CutorError as exc:
            return Account(problem=_problem(exc))
        return fresh
    try:
        journal = ledger.journal(name)
    except LedgerError:
        return Account(problem="not an account's name")
    try:
        return _first_read(journal)
    except CutorError as exc:
        return Account(problem=_problem(exc))


def _problem(exc: CutorError) -> str:
    return clip(f"the journal cannot be read: {exc}", 400) or ""


@dataclass
class LedgerView:
    accounts: list[dict[str, Any]]
    charges: list[dict[str, Any]]
    totals: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {"accounts": self.accounts, "charges": self.charges, "totals": self.totals}


# The accounts as this process last read or wrote them, with the cache file's stamp then: a
# worker that regenerates the page every few seconds does not parse its own cache again.
_MEMORY: dict[Path, tuple[tuple[int, int, int], dict[str, Account]]] = {}


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _known(path: Path) -> dict[str, Account]:
    remembered = _MEMORY.get(path)
    if remembered is not None and remembered[0] == _stamp(path):
        return remembered[1]
    return _load_cache(path)


def update(spool_root: Path, out: Path, *, full: bool = False) -> dict[str, Account]:
    """Every account of `ledger/accounts/`, brought up to date with its journal; the cache saved."""
    ledger = Ledger(spool_root)
    cache_path = out / CACHE_NAME
    known = {} if full else _known(cache_path)
    names = [n for n in ledger.accounts() if not n.startswith(".")]
    accounts = {name: _refresh(ledger, name, known.get(name)) for name in names}
    if set(accounts) != set(known) or any(accounts[n] is not known.get(n) for n in accounts):
        data = {"format": CACHE_FORMAT, "accounts": {n: a.to_json() for n, a in accounts.items()}}
        write_bytes(cache_path, json.dumps(data, separators=(",", ":")).encode(), fsync=False)
    stamp = _stamp(cache_path)
    if stamp is not None:
        _MEMORY[cache_path] = (stamp, accounts)
    return accounts


def view(accounts: dict[str, Account], shown: int) -> LedgerView:
    """The section's rows: every account (by name), the newest `shown` endings across accounts,
    and totals over the readable accounts. Amounts in units (micro-credits), as the ledger's
    `--json`; the page shows them in credits (render.py's `credits`)."""
    rows, endings = [], []
    totals = {"accounts": len(accounts), "unreadable": 0, "deposited": 0, "charged": 0, "held": 0, "available": 0}
    for name in sorted(accounts):
        account = accounts[name]
        row: dict[str, Any] = {"account": clip(name, 200), "problem": account.problem, "seq": None}
        if account.state is not None and account.problem is None:
            amounts = account.state.totals().model_dump()
            for key, units in amounts.items():
                totals[key] += units
                row[key] = units
            row["seq"] = account.state.seq
            endings += [{**e, "account": name} for e in account.endings]
        else:
            totals["unreadable"] += 1
        rows.append(row)
    endings.sort(key=lambda e: (e["time"], e["account"], e["seq"]), reverse=True)
    charges = [{**e, "at": iso_now(e["time"])} for e in endings[:shown]]
    return LedgerView(rows, charges, totals)
