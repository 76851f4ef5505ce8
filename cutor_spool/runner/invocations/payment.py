"""Paying for an invocation: who pays, the hold before it runs, the charge when it ends
(docs/ledger.md, docs/payers.md).

- **Who pays**: the key of a valid payer signature on the request (deployments/payers.py), checked
  here against the body this executor holds, its nonce recorded in the spool for this entry (a
  retry of the same entry is not a replay); without a signature, the deployment's owner. A bad,
  stale or replayed signature refuses the invocation (`signature`: the gateway's 401) with
  nothing run and nothing charged.
- **The hold** ("charge before run"): `cost_of(fee, rate, the run's wall-time limit)` against the
  payer's account, its id the entry's id, placed after every other check and just before the run.
  Short funds refuse the invocation (`payer`: 402) with nothing run. A later claim of the same
  entry (its worker died, or the system failed it and it is retried) finds its hold live and
  uses it: one hold per entry, never two. Its ttl is the wall-time limit plus `hold_margin`: the
  hold of a worker that died expires like a lease and its funds come back.
- **The charge**: `cost_of(fee, rate, the measured wall time)` of the run stage (or of a warm
  server's exchange), capped at the hold, settled just before the final status is written, so a
  client that sees `done` sees its charge; a program that failed on its own (502, 504) is charged
  like one that answered: it used the slot. A program that never ran (a failed dependency, a
  server that did not start) pays the fee. Settling is idempotent: an entry run again after its
  worker died before the commit is charged once.
- **Not charged**: an entry that ends `error` (the system gave up on it) has its hold released;
  one whose run was cut off (a lost lease, a shutdown) leaves its hold to the entry's next claim.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cutor_spool.config import SpoolConfig
from cutor_spool.deployments.errors import BadSignature
from cutor_spool.deployments.nonces import NonceStore
from cutor_spool.deployments.payers import content_digest, signed_path, verify_request
from cutor_spool.deployments.spec import Deployment
from cutor_spool.documents.deployment import InvocationRequest
from cutor_spool.documents.states import State
from cutor_spool.ledger import (
    AlreadySettled,
    InsufficientFunds,
    Ledger,
    LedgerError,
    UnknownHold,
    cost_of,
    format_amount,
)
from cutor_spool.runner.invocations.context import Refused
from cutor_spool.runner.results import Reporter

PAYMENT = "payment.json"  # result/payment.json: who paid, what was held and charged


def most_cost(config: SpoolConfig, wall_limit: float) -> int:
    """The hold: the fee plus the rate for the whole wall-time limit."""
    return cost_of(config.deployments.fee, config.deployments.rate, wall_limit)


def signed_payer(
    request: InvocationRequest,
    deployment: Deployment,
    body_digest: str,
    max_age: float,
    nonces: NonceStore | None = None,
    entry: str | None = None,
) -> str | None:
    """The account of the request's payer signature, None when it has none; BadSignature when it
    does not verify over its method, `/{cid}` + PATH_INFO, query and `body_digest`, or is stale
    (or, with `nonces`, was used by another entry). The executor's check and the gateway's."""
    return verify_request(
        method=request.method,
        path=signed_path(deployment.cid, request.path),
        query=request.query,
        headers=request.headers,
        body_digest=body_digest,
        now=time.time(),
        max_age=max_age,
        nonces=nonces,
        entry=entry,
    )


def payer_of(nonces: NonceStore, entry_id: str, request: InvocationRequest, deployment: Deployment, body: bytes) -> str:
    """The verified payer's account, or the deployment's owner for an unsigned request."""
    try:
        payer = signed_payer(request, deployment, content_digest(body), nonces.max_age, nonces, entry_id)
    except BadSignature as exc:
        raise Refused.because("signature", str(exc)) from None
    return payer or deployment.spec.owner


@dataclass
class Payment:
    """An entry's hold, and its settlement when the entry's final status is written."""

    ledger: Ledger
    hold_id: str
    payer: str
    held: int
    fee: int
    rate: int

    def settle(self, wall: float | None) -> dict[str, object]:
        """Charges the measured wall time; returns what `result/payment.json` says of it."""
        cost = cost_of(self.fee, self.rate, wall or 0.0)
        record = self.ledger.settle(self.hold_id, cost, note=f"invocation {self.hold_id}")
        return {"payer": self.payer, "held": self.held, "charged": record.amount, "kind": record.kind}


def hold(ledger: Ledger, config: SpoolConfig, entry_id: str, payer: str, wall_limit: float, holder: str) -> Payment:
    """Places (or finds) the entry's hold; Refused (`payer`) when the account is short."""
    settings = config.deployments
    amount = most_cost(config, wall_limit)
    payment = Payment(ledger, entry_id, payer, amount, settings.fee, settings.rate)
    try:
        ledger.hold(payer, entry_id, amount, ttl=wall_limit + settings.hold_margin, holder=holder)
    except InsufficientFunds as exc:
        raise Refused.because(
            "payer",
            f"insufficient funds: {payer} has {format_amount(exc.available)} credits available, "
            f"the invocation may cost {format_amount(amount)}",
        ) from None
    except AlreadySettled:
        pass  # run and charged already (its worker died before the commit): settle returns that charge
    except LedgerError as exc:
        raise Refused.because("payer", f"cannot be charged: {exc}") from None
    return payment


class MeasuredWall(Protocol):
    """What knows the run's measured wall time once it ran (InvokeGrader)."""

    wall: float | None


def pay_before_run(
    ledger: Ledger,
    nonces: NonceStore,
    config: SpoolConfig,
    entry_id: str,
    request: InvocationRequest,
    deployment: Deployment,
    measured: MeasuredWall,
    body: bytes,
    reporter: Reporter,
    wall_limit: float,
) -> Payment:
    """Who pays, their hold, and the charge when the entry's final status is written (if `done`):
    Refused (`signature`, `payer`) with nothing held when the request cannot be paid for."""
    payer = payer_of(nonces, entry_id, request, deployment, body)
    payment = hold(ledger, config, entry_id, payer, wall_limit, holder=reporter.status.worker or "")

    def settle(state: State) -> None:
        reporter.before_final = None
        if state == State.DONE:
            reporter.write(PAYMENT, payment.settle(measured.wall))

    reporter.before_final = settle
    return payment


def release(ledger: Ledger, entry_id: str, reason: str) -> bool:
    """Releases the entry's hold, if it has a live one (the system gave up on it)."""
    try:
        ledger.release(entry_id, reason=reason[:500])
    except UnknownHold:
        return False
    return True


HOUSEKEEPING = 60.0  # seconds between two rounds of Housekeeping


@dataclass
class Housekeeping:
    """A maintenance job of the executors that serve invocations (every HOUSEKEEPING seconds,
    on the maintenance thread: maintenance.Every): holds whose holder died and that nobody needed
    the funds of are expired (their funds come back to the balance: `hold` also expires them on
    demand), and the nonces of signatures too old to be accepted again are forgotten, and so are
    Idempotency-Keys older than `deployments.idempotency_ttl`, and so are the indexes
    (`ledger/holds/`) of holds that ended more than `hold_ttl` seconds ago (the journal keeps
    their records). Any executor may run it; all are idempotent, so many doing it at once only
    repeat each other."""

    ledger: Ledger
    nonces: NonceStore
    keys: Callable[[float], object] = lambda _now: None  # forgets old Idempotency-Keys
    hold_ttl: float | None = None  # None: hold indexes are kept

    def __call__(self) -> None:
        now = time.time()
        self.ledger.expire(now)
        self.nonces.sweep(now)
        self.keys(now)
        if self.hold_ttl is not None:
            self.ledger.prune_holds(now, self.hold_ttl)
