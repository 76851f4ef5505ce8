"""An account's state as a fold over its journal: deposits, charges and live holds.

`State.apply` is the one place that says what a record does; the writers (which build the next
record from the state), the readers (which check each record they read) and the audit (which
collects every problem instead of stopping at the first) all go through it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from cutor_spool.ledger.models import Record, Totals


def digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class LiveHold:
    amount: int
    expires: float
    seq: int
    holder: str


@dataclass
class State:
    seq: int = 0
    digest: str = ""  # SHA-256 of record `seq`'s bytes: the next record's `prev`
    deposited: int = 0
    charged: int = 0
    holds: dict[str, LiveHold] = field(default_factory=dict)
    held: int = 0  # the sum of the live holds' amounts, kept as they come and go

    @property
    def available(self) -> int:
        return self.deposited - self.charged - self.held

    def totals(self) -> Totals:
        return Totals(deposited=self.deposited, charged=self.charged, held=self.held, available=self.available)

    def copy(self) -> State:
        return State(self.seq, self.digest, self.deposited, self.charged, dict(self.holds), self.held)

    def apply(self, record: Record, record_digest: str) -> list[str]:
        """Moves the state past `record`; returns what is wrong with it (empty if nothing)."""
        problems = []
        where = f"{record.account} record {record.seq}"
        if record.seq != self.seq + 1:
            problems.append(f"{where}: follows record {self.seq}")
        if record.prev != self.digest:
            problems.append(f"{where}: its prev does not match record {self.seq}'s digest (a record was changed)")
        problems += [f"{where}: {p}" for p in self._effect(record)]
        if record.after != self.totals():
            problems.append(f"{where}: states {_show(record.after)}, the journal adds up to {_show(self.totals())}")
        if self.available < 0:
            problems.append(f"{where}: the account is below zero ({self.available})")
        self.seq, self.digest = record.seq, record_digest
        return problems

    def _effect(self, record: Record) -> list[str]:
        hold_id = record.hold_id or ""
        if record.kind == "deposit":
            self.deposited += record.amount
            return [] if record.amount > 0 and not hold_id else ["a deposit of nothing, or with a hold id"]
        if not hold_id:
            return [f"a {record.kind} without a hold id"]
        if record.kind == "hold":
            if hold_id in self.holds:
                return [f"hold {hold_id} is placed while it is live already"]
            self.holds[hold_id] = LiveHold(record.amount, record.expires or 0.0, record.seq, record.holder)
            self.held += record.amount
            return []
        live = self.holds.pop(hold_id, None)
        if live is None:
            return [f"{record.kind} of hold {hold_id}, which is not live (settled, released or expired twice?)"]
        self.held -= live.amount
        problems = (
            [] if record.held == live.amount else [f"ends hold {hold_id} of {live.amount} as if it held {record.held}"]
        )
        if record.kind == "settle":
            self.charged += record.amount
            if record.amount > live.amount:
                problems.append(f"charges {record.amount}, more than hold {hold_id}'s {live.amount}")
        elif record.amount != 0:
            problems.append(f"a release that charges {record.amount}")
        return problems

    # -- checkpoints: the state at a record, so that a reader need not fold the whole journal

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "digest": self.digest,
            "deposited": self.deposited,
            "charged": self.charged,
            "holds": {
                k: {"amount": h.amount, "expires": h.expires, "seq": h.seq, "holder": h.holder}
                for k, h in sorted(self.holds.items())
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> State:
        holds = {
            str(k): LiveHold(int(v["amount"]), float(v["expires"]), int(v["seq"]), str(v["holder"]))
            for k, v in data["holds"].items()
        }
        held = sum(h.amount for h in holds.values())
        return cls(int(data["seq"]), str(data["digest"]), int(data["deposited"]), int(data["charged"]), holds, held)


def _show(t: Totals) -> str:
    return f"deposited {t.deposited}, charged {t.charged}, held {t.held}, available {t.available}"
