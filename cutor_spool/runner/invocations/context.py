"""What a deployment's build and its invocations share on the executor: the services the worker
hands them, the refusal that ends an entry `invalid`, and the step from a spec's manifest to the
`Submission` whose plan the pipeline runs.

A deployment's plan is a submission's (runner/intake.py) with its settings from the verified spec
instead of a submission.yaml: the same fields mean the same there (`deployments/manifest.py`
imports their types from `submission.py`), the same limits resolution within the spool's maxima,
the same scripts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.public
from pydantic import ValidationError

from cutor_spool.config import SpoolConfig
from cutor_spool.deployments.nonces import NonceStore
from cutor_spool.deployments.store import Store
from cutor_spool.layout import SpoolPaths
from cutor_spool.ledger import Ledger
from cutor_spool.runner.intake import validation_problems
from cutor_spool.runner.pipeline import Pipeline
from cutor_spool.runner.tree import Problem
from cutor_spool.submission import Submission
from cutor_spool.watcher.claim import iso

# What of a spec's manifest is a submission's setting (`env` is sealed apart, `files` are in the
# bundle).
MANIFEST_FIELDS = ("dependencies", "compile", "run", "limits", "network")


class Refused(Exception):
    """The request's own fault: the entry ends `invalid` with these problems, and nothing runs."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(map(str, problems)))

    @classmethod
    def because(cls, where: str, message: str) -> Refused:
        return cls([Problem(where, message)])


@dataclass
class Services:
    """The executor's parts that builds and invocations use (one backend and slot pool for all
    the queues of the process: runner/invocations/worker.py)."""

    paths: SpoolPaths
    config: SpoolConfig
    store: Store
    pipeline: Pipeline
    server_key: nacl.public.PrivateKey | None
    staging: Path  # root-only, on this host's local disk: bundles unpacked for a build
    warm: Any = None  # warm.WarmPool: server deployments' instances (set by the worker)
    ledger: Ledger = field(init=False)  # the escrow (payment.py)
    nonces: NonceStore = field(init=False)  # payers' signatures' nonces, recorded per entry

    def __post_init__(self) -> None:
        self.ledger = Ledger(self.paths.root)
        self.nonces = NonceStore(self.paths.root, max_age=self.config.deployments.signature_max_age)

    def staging_for(self, name: str) -> Path:
        """`staging/<name>`: made (0700) by whoever needs it, or the caller makes it."""
        self.staging.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self.staging / name


def submission_of(manifest: dict[str, Any], config: SpoolConfig) -> Submission:
    """The deployment's settings as a Submission; limits above the spool's maxima are refused."""
    data = {key: manifest[key] for key in MANIFEST_FIELDS if key in manifest}
    if isinstance(manifest.get("server"), dict) and "command" in manifest["server"]:  # warm server: warm.py
        data["run"] = manifest["server"]["command"]  # planned, checked and located as a run stage is
    try:
        return Submission.model_validate(data, context={"maximum": config.limits.resolved_maximum()})
    except ValidationError as exc:
        raise Refused([Problem(f"manifest.{p.where}", p.message) for p in validation_problems(exc)]) from None


def now() -> str:
    return iso(time.time())
