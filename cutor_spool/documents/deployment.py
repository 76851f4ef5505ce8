"""The documents of deployments (docs/deployments.md, "Deploy and invoke: the design"):

- `spec.json`, a blob of the content store (`cas/`) whose CID is the deployment's id. Written once
  by `cutor-spool deploy`, signed by its owner, never changed; read by every executor that builds
  or invokes it and by the page. Secrets are in it only sealed to the spool's server key.
- `deployments/<cid>/build.json`: the deployment's build record, written by the executor that ran
  its one compile (`pending` when `deploy` drops the build, then `ready` or `failed`).
- `invocations/*/<id>/request.json`: what an invocation asks (or that an entry is the deployment's
  build), written by the client (`cutor-spool invoke`, `deploy`, the gateway); the body is the
  entry's file `body`, next to it.
- `invocations/done/<id>/result/response.json`: the program's answer as CGI makes it.

Signatures and canonical bytes: what is signed is `canonical(document without "signature")`, the
JSON with sorted keys, no spaces, UTF-8 (`canonical` below), so that any language can check it.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import Field

from cutor_spool.documents.base import Document

SPEC_VERSION = 1
# What the owner signs to accept the operator's terms: this prefix, then the terms blob's CID.
TERMS_CONTEXT = b"cutor-spool terms v1\n"
# What the owner signs to make the spec: this prefix, then canonical(spec without "signature").
SPEC_CONTEXT = b"cutor-spool deployment v1\n"


def canonical(data: dict[str, Any]) -> bytes:
    """The bytes that are signed: sorted keys, no whitespace, UTF-8, integers as integers."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


class TermsAcceptance(Document):
    cid: str  # the CID of the operator's terms as the owner saw them (the blob is in cas/)
    signature: str  # base64 of the owner's Ed25519 signature over TERMS_CONTEXT + cid


class DeploymentSpec(Document):
    """`spec.json`. `manifest` is deployment.yaml as validated (the submission fields that apply:
    dependencies, compile, run, files, limits, network; `env` is never in it: env vars are in
    `sealed_env`, names and values together)."""

    version: int = SPEC_VERSION
    owner: str  # "ed25519:…", as `cutor-spool keys show` prints it
    bundle: str  # the CID of the deterministic zip of the deployment's directory
    manifest: dict[str, Any]
    sealed_env: str | None = None  # base64 sealed box (X25519) of JSON {"NAME": "value", …}
    server_key: str | None = None  # "x25519:…", the spool key the env is sealed to
    terms: TermsAcceptance
    created: str  # RFC 3339 UTC
    signature: str = Field(default="")  # base64 Ed25519 over SPEC_CONTEXT + canonical(rest)

    def signed_bytes(self) -> bytes:
        body = self.dump()
        body.pop("signature", None)
        return SPEC_CONTEXT + canonical(body)


class DeploymentState(StrEnum):
    PENDING = "pending"  # deploy dropped its build; no executor finished it yet
    READY = "ready"  # compiled; `work` names the work area to run
    FAILED = "failed"  # its compile failed or its build was refused: invocations end invalid


class DeploymentBuild(Document):
    """`deployments/<cid>/build.json`."""

    nullable: ClassVar[frozenset[str]] = frozenset({"reason"})

    deployment: str  # the spec's CID
    state: DeploymentState
    work: str | None = None  # CID of the compiled work area (a deterministic zip), when ready
    build_entry: str | None = None  # the invocations entry id that built it
    reason: str | None = None  # why it failed
    created: str
    finished: str | None = None


class RequestKind(StrEnum):
    INVOKE = "invoke"
    BUILD = "build"  # the deployment's one compile, dropped by `deploy`


class InvocationRequest(Document):
    """`invocations/incoming/<id>/request.json`; the request body is the file `body` beside it."""

    kind: RequestKind = RequestKind.INVOKE
    deployment: str  # the spec's CID
    method: str = "POST"
    path: str = "/"  # PATH_INFO: what follows /{cid} in the gateway's URL
    query: str = ""  # QUERY_STRING, without "?"
    headers: list[tuple[str, str]] = Field(default_factory=list)  # in order; names as sent
    payer: str | None = None  # the next issue's escrow: who pays (default: the owner)
    idempotency_key: str | None = None


class Response(Document):
    """`result/response.json`: the program's CGI answer (RFC 3875 section 6), or 502 when its
    output is not a valid CGI response; `body` when the body is UTF-8, else `body_base64`."""

    status: int
    reason: str | None = None
    headers: list[tuple[str, str]] = Field(default_factory=list)
    body: str | None = None
    body_base64: str | None = None
