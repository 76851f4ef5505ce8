"""A deployment's `spec.json`: made and signed by `deploy`, verified by whoever runs it.

`make_spec` seals the manifest's env vars to the spool's server key, signs the spec with the
owner's key and returns it with the bytes to store (their CID is the deployment's id).
`load_deployment` is the one way to read a deployment back; it refuses, each with its own error:

    the CID is not in the store                  UnknownCid
    the blob's bytes do not match the CID        BlobMismatch
    not a spec (JSON, fields, version, manifest) BadSpec
    the owner's signature does not verify        BadSignature
    terms not accepted (no valid signature over  TermsNotAccepted
      TERMS_CONTEXT + the terms' CID, or terms
      the store does not hold)
    the bundle is not in the store               UnknownCid

The owner's signature is checked over the spec as stored (every field but `signature`, in the
canonical form), not over what this version's model keeps of it: a field that a later version adds
is covered by the signature, and one that someone else adds breaks it.

`open_env` opens the sealed env vars in memory with the server's private key (SealError for
another key or a changed box); its result must never be written anywhere.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass
from typing import Any

import nacl.public
from pydantic import TypeAdapter, ValidationError

from cutor_spool.deployments import keys
from cutor_spool.deployments.cid import parse_cid
from cutor_spool.deployments.errors import (
    BadManifest,
    BadSignature,
    BadSpec,
    InvalidCid,
    KeyFileError,
    SealError,
    TermsNotAccepted,
    UnknownCid,
)
from cutor_spool.deployments.manifest import DeploymentManifest, EnvValue, manifest_for_spec, parse_manifest
from cutor_spool.deployments.store import Store
from cutor_spool.documents.deployment import (
    SPEC_CONTEXT,
    SPEC_VERSION,
    TERMS_CONTEXT,
    DeploymentSpec,
    TermsAcceptance,
    canonical,
)
from cutor_spool.limits import Limits
from cutor_spool.submission import EnvName

MAX_SPEC = 16 << 20
_ENV = TypeAdapter(dict[EnvName, EnvValue])


def utc_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def terms_message(terms_cid: str) -> bytes:
    """What an owner signs to accept the terms stored under `terms_cid`."""
    return TERMS_CONTEXT + terms_cid.encode("ascii")


def accept_terms(key: keys.SigningKey, terms_cid: str) -> TermsAcceptance:
    signature = key.sign(terms_message(terms_cid))
    return TermsAcceptance(cid=terms_cid, signature=base64.b64encode(signature).decode("ascii"))


def make_spec(
    key: keys.SigningKey,
    *,
    bundle: str,
    manifest: DeploymentManifest,
    terms: TermsAcceptance,
    server_key: str | None,
    created: str | None = None,
) -> tuple[DeploymentSpec, bytes]:
    """The signed spec and the bytes to store as `spec.json` (their CID is the deployment's id).
    The env vars are sealed to `server_key` (`x25519:…`); an env without one is refused."""
    sealed = None
    if manifest.env:
        if server_key is None:
            raise KeyFileError("the deployment has env vars but the spool publishes no server key to seal them to")
        sealed = keys.seal(server_key, canonical(dict(manifest.env)))
    unsigned = DeploymentSpec(
        owner=key.public,
        bundle=bundle,
        manifest=manifest_for_spec(manifest),
        sealed_env=sealed,
        server_key=server_key if sealed is not None else None,
        terms=terms,
        created=created or utc_now(),
    )
    signature = base64.b64encode(key.sign(unsigned.signed_bytes())).decode("ascii")
    spec = unsigned.model_copy(update={"signature": signature})
    return spec, spec_bytes(spec)


def spec_bytes(spec: DeploymentSpec) -> bytes:
    """`spec.json` as stored: sorted keys, indented for people, UTF-8, a final newline."""
    return (json.dumps(spec.dump(), indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


@dataclass(frozen=True)
class Deployment:
    cid: str
    spec: DeploymentSpec
    manifest: DeploymentManifest


def load_deployment(store: Store, cid: str, *, maximum: Limits | None = None) -> Deployment:
    """The deployment named `cid`, verified (see the module's table); with `maximum`, its limits
    must be within the spool's too (BadSpec)."""
    raw = _parse(store.get(cid, limit=MAX_SPEC), cid)
    try:
        spec = DeploymentSpec.model_validate(raw, extra="ignore")
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False))
        raise BadSpec(f"{cid} is not a deployment spec ({problems})") from None
    if spec.version != SPEC_VERSION:
        raise BadSpec(f"{cid}: spec version {spec.version}, this spool reads version {SPEC_VERSION}")
    _check_keys(cid, spec)
    unsigned = {k: v for k, v in raw.items() if k != "signature"}
    try:
        keys.verify(spec.owner, SPEC_CONTEXT + canonical(unsigned), _signature(spec.signature))
    except BadSignature:
        raise BadSignature(f"{cid}: the owner's signature ({spec.owner}) does not verify over the spec") from None
    _check_terms(store, cid, spec)
    manifest = _manifest(cid, spec, maximum)
    _check_bundle(store, cid, spec.bundle)
    return Deployment(cid=cid, spec=spec, manifest=manifest)


def _parse(data: bytes, cid: str) -> dict[str, Any]:
    try:
        raw = json.loads(data)
    except ValueError:
        raise BadSpec(f"{cid} is not a deployment spec (not JSON)") from None
    if not isinstance(raw, dict):
        raise BadSpec(f"{cid} is not a deployment spec (not a JSON object)")
    return raw


def _check_keys(cid: str, spec: DeploymentSpec) -> None:
    try:
        keys.parse_public(spec.owner, keys.ED25519)
        if spec.server_key is not None:
            keys.parse_public(spec.server_key, keys.X25519)
    except KeyFileError as exc:
        raise BadSpec(f"{cid}: {exc}") from None
    if spec.sealed_env is not None and spec.server_key is None:
        raise BadSpec(f"{cid}: sealed env vars but no server key named")


def _signature(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return b""  # verifies with no key


def _check_terms(store: Store, cid: str, spec: DeploymentSpec) -> None:
    terms = spec.terms
    try:
        parse_cid(terms.cid)
        keys.verify(spec.owner, terms_message(terms.cid), _signature(terms.signature))
    except (InvalidCid, BadSignature):
        raise TermsNotAccepted(f"{cid}: the owner's acceptance of the terms {terms.cid!r} does not verify") from None
    if not store.has(terms.cid):
        raise TermsNotAccepted(f"{cid}: the terms it accepts ({terms.cid}) are not in this spool's store")


def _manifest(cid: str, spec: DeploymentSpec, maximum: Limits | None) -> DeploymentManifest:
    if "env" in spec.manifest:
        raise BadSpec(f"{cid}: its manifest carries env vars unsealed")
    try:
        return parse_manifest(spec.manifest, maximum=maximum)
    except BadManifest as exc:
        problems = "; ".join(f"{where}: {message}" for where, message in exc.problems)
        raise BadSpec(f"{cid}: its manifest is not valid ({problems})") from None


def _check_bundle(store: Store, cid: str, bundle: str) -> None:
    try:
        present = store.has(bundle)
    except InvalidCid:
        raise BadSpec(f"{cid}: its bundle {bundle!r} is not a CID") from None
    if not present:
        raise UnknownCid(f"{cid}: its bundle {bundle} is not in the store")


def open_env(deployment: Deployment, server_private_key: nacl.public.PrivateKey) -> dict[str, str]:
    """The deployment's env vars, opened in memory ({} when it has none). SealError when they were
    sealed to another key, or the box does not open (another key, a changed byte)."""
    spec = deployment.spec
    if spec.sealed_env is None:
        return {}
    public = keys.public_text(keys.X25519, bytes(server_private_key.public_key))
    if spec.server_key != public:
        raise SealError(
            f"{deployment.cid}: its env vars are sealed to {spec.server_key}, not to this executor's key {public}"
        )
    plain = keys.open_sealed(server_private_key, spec.sealed_env)
    try:
        return _ENV.validate_python(json.loads(plain))
    except (ValueError, ValidationError):
        raise SealError(f"{deployment.cid}: its sealed env vars are not a mapping of names to values") from None
