"""The gateway's early payment checks (the `Payments` seam of flow.py), before anything is written:

- a request that carries a payer signature (deployments/payers.py) must verify over the method,
  the path, the query and the `Content-Digest` it declares, and be fresh: else 401. Its nonce is
  not recorded here (the executor records it, for the entry it runs, and checks the declared
  digest against the body it holds): the gateway stays stateless, and a retry with the same
  Idempotency-Key is answered from the first entry before any replay could matter;
- the account that pays (the signer, else the deployment's owner) must have at least the hold
  the invocation will place (fee + rate x its wall-time limit, runner/invocations/payment.py)
  available: else 402, and nothing is dropped.

Both are checked again by the executor, which is the authority (anyone who can drop into the
spool bypasses the gateway); funds may be spent between the two checks, and then the entry ends
`invalid` (`payer`), which the gateway answers with 402 as well.
"""

from __future__ import annotations

from collections import OrderedDict

from cutor_spool.config import SpoolConfig, StageKind
from cutor_spool.deployments.errors import BadSignature, DeploymentError
from cutor_spool.deployments.spec import Deployment, load_deployment
from cutor_spool.deployments.store import Store
from cutor_spool.gateway.answers import Refusal
from cutor_spool.gateway.flow import Call
from cutor_spool.ledger import Ledger, format_amount
from cutor_spool.runner.invocations.context import Refused, submission_of
from cutor_spool.runner.invocations.payment import most_cost, signed_payer
from cutor_spool.runner.invocations.run import invocation_limits

_CACHED = 256  # specs never change (a CID names their bytes): a few verified ones are kept


class SpoolPayments:
    def __init__(self, store: Store, ledger: Ledger, config: SpoolConfig) -> None:
        self.store, self.ledger, self.config = store, ledger, config
        self._specs: OrderedDict[str, tuple[Deployment, int]] = OrderedDict()

    def check(self, call: Call) -> str | None:
        request = call.invocation
        deployment, hold = self._deployment(request.deployment)
        payer = self._payer(call, deployment)
        account = payer or deployment.spec.owner
        if hold > 0:
            available = self.ledger.balance(account).available
            if available < hold:
                raise Refusal(
                    402,
                    f"insufficient funds: {account} has {format_amount(available)} credits available, "
                    f"the invocation may cost {format_amount(hold)}",
                )
        return payer

    def _payer(self, call: Call, deployment: Deployment) -> str | None:
        request = call.invocation
        digests = [value for name, value in request.headers if name.lower() == "content-digest"]
        try:
            return signed_payer(
                request,
                deployment,
                digests[0] if len(digests) == 1 else "",
                self.config.deployments.signature_max_age,
            )
        except BadSignature as exc:
            raise Refusal(401, f"the payer's signature is refused: {exc}") from None

    def _deployment(self, cid: str) -> tuple[Deployment, int]:
        """The verified deployment and the hold an invocation of it places (cached by CID)."""
        if cid in self._specs:
            self._specs.move_to_end(cid)
            return self._specs[cid]
        try:
            deployment = load_deployment(self.store, cid, maximum=self.config.limits.resolved_maximum())
            sub = submission_of(deployment.spec.manifest, self.config)
        except (DeploymentError, Refused) as exc:
            raise Refusal(502, f"the deployment cannot be used: {exc}") from None
        wall = invocation_limits(sub, self.config)[StageKind.RUN].wall_time
        self._specs[cid] = (deployment, most_cost(self.config, wall))
        while len(self._specs) > _CACHED:
            self._specs.popitem(last=False)
        return self._specs[cid]
