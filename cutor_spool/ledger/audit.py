"""`ledger audit`: every account folded again from its first record, every rule checked.

What is checked, for each account: the records are numbered 1..n without a gap and nothing else
lies among them; each one's `prev` is the digest of the one before (an edited record breaks the
chain); each follows from the state before it (`State.apply`: the totals it states are the ones the
journal adds up to, it never takes the account below zero, a hold is placed only while not live and
ended at most once, a settlement charges at most what was held); every checkpoint is the fold at
its record; every hold index names an account that has a journal.
"""

from __future__ import annotations

import json
import os
import re
from typing import TYPE_CHECKING

from cutor_spool.ledger.journal import Journal
from cutor_spool.ledger.models import AuditReport, Balance, LedgerCorrupt, LedgerError
from cutor_spool.ledger.state import State, digest

if TYPE_CHECKING:
    from cutor_spool.ledger.ledger import Ledger

RECORD_NAME = re.compile(r"(\d{12})\.json")


def audit(ledger: Ledger) -> AuditReport:
    problems: list[str] = []
    accounts: dict[str, Balance] = {}
    charged = records = 0
    for account in ledger.accounts():
        try:
            journal = ledger.journal(account)
        except LedgerError as exc:
            problems.append(f"accounts/{account}: {exc}")
            continue
        state, account_charged, count = _audit_account(journal, problems)
        accounts[account] = Balance(account=account, seq=state.seq, **state.totals().model_dump())
        charged += account_charged
        records += count
    for name in sorted(_names(ledger.holds)):
        index = ledger._read_index(ledger.holds / name)
        if index is None:
            problems.append(f"holds/{name}: not a hold index")
        elif index.account not in accounts:
            problems.append(f"holds/{name}: names {index.account}, which has no journal")
    return AuditReport(ok=not problems, problems=problems, accounts=accounts, charged=charged, records=records)


def _audit_account(journal: Journal, problems: list[str]) -> tuple[State, int, int]:
    """Folds one journal from record 1, collecting problems; (its state, the sum of its
    settlements' charges, the number of records)."""
    numbers = _record_numbers(journal, problems)
    checkpoints = _checkpoints(journal, problems)
    state, charged = State(), 0
    for seq in range(1, max(numbers, default=0) + 1):
        raw = journal.raw(seq)
        if raw is None:
            problems.append(f"{journal.account}: record {seq} is missing")
            break
        try:
            record = journal.parse(seq, raw)
        except LedgerCorrupt as exc:
            problems.append(str(exc))
            break
        problems.extend(state.apply(record, digest(raw)))
        if record.kind == "settle":
            charged += record.amount
            if record.items is not None and sum(cost for _, cost in record.items) != record.amount:
                problems.append(f"{journal.account}: record {seq}: its items do not add up to its charge")
        expected = checkpoints.pop(seq, None)
        if expected is not None and expected != state.to_json():
            problems.append(f"{journal.account}: checkpoint {seq} does not match the journal's state at record {seq}")
    for seq in checkpoints:
        problems.append(f"{journal.account}: checkpoint {seq} is past the journal's last record")
    return state, charged, len(numbers)


def _record_numbers(journal: Journal, problems: list[str]) -> set[int]:
    numbers = set()
    base = journal.dir / "journal"
    for chunk in sorted(_names(base)):
        for name in _names(base / chunk):
            match = RECORD_NAME.fullmatch(name)
            if match is None or journal.path(int(match[1])) != base / chunk / name:
                problems.append(f"{journal.account}: journal/{chunk}/{name} is not a record's name")
                continue
            numbers.add(int(match[1]))
    if numbers and numbers != set(range(1, max(numbers) + 1)):
        missing = sorted(set(range(1, max(numbers) + 1)) - numbers)
        problems.append(f"{journal.account}: records missing from the journal: {missing[:10]}")
    return numbers


def _checkpoints(journal: Journal, problems: list[str]) -> dict[int, dict[str, object]]:
    found = {}
    for name in _names(journal.checkpoints):
        match = RECORD_NAME.fullmatch(name)
        try:
            if match is None:
                raise ValueError
            found[int(match[1])] = json.loads((journal.checkpoints / name).read_bytes())
        except (OSError, ValueError):
            problems.append(f"{journal.account}: checkpoints/{name} is not a checkpoint")
    return found


def _names(directory: os.PathLike[str]) -> list[str]:
    try:
        return [n for n in os.listdir(directory) if not n.startswith(".tmp-")]
    except (FileNotFoundError, NotADirectoryError):
        return []
