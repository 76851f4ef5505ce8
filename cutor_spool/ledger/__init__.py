"""The escrow: a ledger of accounts, holds and charges kept in the spool, without a database (docs/ledger.md)."""

from cutor_spool.ledger.ledger import Ledger
from cutor_spool.ledger.models import (
    AlreadySettled,
    AuditReport,
    Balance,
    Hold,
    InsufficientFunds,
    LedgerCorrupt,
    LedgerError,
    Record,
    UnknownHold,
    cost_of,
    format_amount,
    parse_account,
    parse_amount,
)

__all__ = [
    "AlreadySettled",
    "AuditReport",
    "Balance",
    "Hold",
    "InsufficientFunds",
    "Ledger",
    "LedgerCorrupt",
    "LedgerError",
    "Record",
    "UnknownHold",
    "cost_of",
    "format_amount",
    "parse_account",
    "parse_amount",
]
