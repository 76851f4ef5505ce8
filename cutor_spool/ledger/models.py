"""The ledger's documents, errors, accounts and amounts (docs/ledger.md).

Amounts are integers of the ledger's unit, the micro-credit: 1 credit = 1,000,000 units. The
Python API and the files speak units; the command line speaks credits with up to six decimals
(`format_amount`, `parse_amount`), so that no amount is ever a float.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cutor_spool.deployments.errors import KeyFileError
from cutor_spool.deployments.keys import ED25519, parse_public, public_of_file
from cutor_spool.errors import CutorError

UNITS_PER_CREDIT = 1_000_000
DECIMALS = 6
HOLD_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")

Kind = Literal["deposit", "hold", "settle", "release"]


class LedgerError(CutorError):
    """A ledger operation was refused (bad account, bad amount, unknown hold)."""


class LedgerCorrupt(LedgerError):
    """A journal record does not follow from the one before it: the books were changed by hand."""


class InsufficientFunds(LedgerError):
    def __init__(self, account: str, available: int, needed: int) -> None:
        self.account, self.available, self.needed = account, available, needed
        super().__init__(f"{account} has {format_amount(available)} available, {format_amount(needed)} is needed")


class AlreadySettled(LedgerError):
    """The hold's id was settled already: the request ran and was charged; its answer stands."""

    def __init__(self, record: Record) -> None:
        self.record = record
        super().__init__(f"hold {record.hold_id} was settled already (journal record {record.seq})")


class UnknownHold(LedgerError):
    """No hold with this id was ever placed (or it is not live, for `renew`)."""


class _Document(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Totals(_Document):
    """An account's state after a record: available = deposited - charged - held."""

    deposited: int
    charged: int
    held: int
    available: int


class Record(_Document):
    """One entry of an account's journal, `accounts/<account>/journal/<chunk>/<seq>.json`.

    `amount`: a deposit's credit, a hold's reservation, a settlement's charge, 0 for a release.
    `held`: for a settle or release, the amount of the hold it ends. `items`: a settle of a block
    of requests (the direct path, runner/invocations/blocks.py): each request's id and charge,
    which add up to `amount` (`ledger audit` checks). `prev` is the SHA-256 of the
    previous record's bytes ("" for the first), so that an edited record breaks the chain."""

    seq: int = Field(ge=1)
    prev: str
    kind: Kind
    account: str
    amount: int = Field(ge=0)
    hold_id: str | None = None
    held: int = Field(default=0, ge=0)
    expires: float | None = None
    holder: str = ""
    reason: str = ""
    note: str = ""
    items: list[tuple[str, int]] | None = None  # a block's settle: (invocation id, its charge) each
    time: float
    after: Totals


class HoldIndex(_Document):
    """`holds/<hold_id>.json`: which account a hold id belongs to, and caches of where its records
    are. Only the journal is the truth; every field but `account` is a hint that readers check.
    `since`: every record of this id is after it. `seq`/`end`: its hold and ending records, once
    known. `expires`: the holder's renewals (`Ledger.renew`)."""

    hold_id: str
    account: str
    since: int = Field(ge=0)
    amount: int = Field(ge=0)
    holder: str = ""
    expires: float
    seq: int | None = None
    end: int | None = None


class Hold(_Document):
    hold_id: str
    account: str
    amount: int
    expires: float
    holder: str
    seq: int


class Balance(_Document):
    account: str
    deposited: int = 0
    charged: int = 0
    held: int = 0
    available: int = 0
    seq: int = 0  # the journal record this balance is read at


class AuditReport(_Document):
    ok: bool
    problems: list[str]
    accounts: dict[str, Balance]
    charged: int  # the sum of every settle record's charge, over all accounts
    records: int


def check_account(text: str) -> str:
    """An account's text form ("ed25519:<base32>"), validated; LedgerError if it is not one."""
    try:
        parse_public(text, ED25519)
    except KeyFileError as exc:
        raise LedgerError(f"not an account: {exc}") from None
    return text.strip()


def parse_account(text_or_key_file: str) -> str:
    """An account from its text ("ed25519:…", as `keys show` prints it) or from a key file."""
    text = text_or_key_file.strip()
    if text.startswith(f"{ED25519}:"):
        return check_account(text)
    path = Path(text_or_key_file)
    if not path.exists():
        raise LedgerError(
            f"{text_or_key_file!r} is neither an account ('ed25519:' and 52 base32 letters) nor a key file"
        )
    try:
        public = public_of_file(path)
    except KeyFileError as exc:
        raise LedgerError(str(exc)) from None
    return check_account(public)


def check_hold_id(hold_id: str) -> str:
    if not HOLD_ID.fullmatch(hold_id):
        raise LedgerError(f"{hold_id!r} is not a hold id (1-128 of A-Z a-z 0-9 . _ -, not starting with . or -)")
    return hold_id


def cost_of(fee: int, rate_per_second: int, seconds: float) -> int:
    """fee + rate x seconds, in units, rounded up: time counts to the microsecond, then the product
    is rounded up to a whole unit in integers (no float ever reaches an amount)."""
    if fee < 0 or rate_per_second < 0 or seconds < 0:
        raise ValueError("fee, rate and seconds must not be negative")
    micros = round(seconds * 1_000_000)
    return fee + -(-rate_per_second * micros // 1_000_000)


def format_amount(units: int) -> str:
    """Units as credits with six decimals: 1500000 -> "1.500000"."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), UNITS_PER_CREDIT)
    return f"{sign}{whole}.{frac:0{DECIMALS}d}"


def parse_amount(text: str) -> int:
    """Credits ("2", "0.25", "1.000001") as units; LedgerError for anything else, a negative
    amount or more than six decimals."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise LedgerError(f"{text!r} is not an amount (credits, up to {DECIMALS} decimals: 2, 0.25)") from None
    if not value.is_finite() or value < 0:
        raise LedgerError(f"{text!r} is not an amount: it must be a finite number, not negative")
    units = value * UNITS_PER_CREDIT
    if units != units.to_integral_value():
        raise LedgerError(f"{text!r} has more than {DECIMALS} decimals (the unit is a micro-credit)")
    return int(units)
