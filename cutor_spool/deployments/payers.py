"""Payers: requests signed with a payer's Ed25519 key, as HTTP Message Signatures (RFC 9421).

A request names who pays for it by carrying a signature made with the payer's signing key (a key
of `cutor-spool keys new`). The signature is the member labelled `payer` (SIGNATURE_LABEL) of the
`Signature-Input` and `Signature` fields, made by `http-message-signatures` (pyauth), so that any
RFC 9421 client can make one. docs/payers.md is the contract; in short:

- covered components, all required: "@method", "@path", "@query", "content-digest". The path is
  the whole path the client sent to the gateway, `/<cid>` + PATH_INFO (`signed_path`), so that a
  signature names its deployment too; "@query" is covered even when empty ("?"), because a query
  changes what a program does; the body is bound through `Content-Digest` (RFC 9530, exactly one
  `sha-256` member), which the verifier compares with the digest of the body bytes it holds.
  "@authority" is not covered: the spool does not know under which name a gateway was reached.
- parameters: `created` (required), `nonce` (required: 16 to 128 of `A-Za-z0-9+/=_.~-`),
  `keyid` (required: the payer's account, `ed25519:<base32>`), `alg` ("ed25519", or absent),
  `tag` (required, "cutor-spool-payer": it says the signature was made to pay here, so that a
  signature the same key made for another service cannot be relabelled into a payment), and
  `expires` (optional).
- time: refused when `created` lies more than CLOCK_SKEW (30 s) in the future or more than
  max_age (MAX_AGE, 300 s, by default) + CLOCK_SKEW in the past, or when `expires` has passed.
- replay: a (keyid, nonce) pair pays once. `NonceStore.use` (deployments/nonces.py) records it with an atomic, exclusive
  link(2) under `<spool>/ledger/nonces/<minute of created>/`; a second use is `Replayed`, unless it
  is the same spool entry trying again (`entry`: a retry after a lost lease is not a replay).
  Nonces are forgotten once their signature is too old to verify anyway (`sweep`).
- several signatures: only the `payer` member counts; members with other labels (a proxy's, a
  client's own) are left alone. A request without a `payer` member is unsigned: `verify_request`
  returns None and the deployment's owner pays, as the seed says (the caller applies that rule).
- field names are matched case-insensitively; repeated field lines are joined with ", ", as
  RFC 9110 combines them.
"""

from __future__ import annotations

import datetime
import hashlib
import re
import secrets
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import http_sf
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    InvalidSignature,
    algorithms,
)
from http_message_signatures.exceptions import HTTPMessageSignaturesException

from cutor_spool.deployments.errors import BadSignature, KeyFileError
from cutor_spool.deployments.keys import ED25519, SigningKey, parse_public
from cutor_spool.deployments.nonces import CLOCK_SKEW, MAX_AGE, NonceStore

__all__ = [
    "COVERED",
    "SIGNATURE_LABEL",
    "SIGNATURE_TAG",
    "BadSignature",
    "content_digest",
    "new_nonce",
    "sign_request",
    "signed_path",
    "verify_request",
]

SIGNATURE_LABEL = "payer"
SIGNATURE_TAG = "cutor-spool-payer"
COVERED = ("@method", "@path", "@query", "content-digest")
DIGEST_ALGORITHM = "sha-256"
NONCE = re.compile(r"[A-Za-z0-9+/=_.~-]{16,128}")
SIGNATURE_FIELDS = ("content-digest", "signature-input", "signature")
# Never sent anywhere: the library wants an absolute URL, and no covered component reads its host.
_ORIGIN = "https://gateway.cutor-spool.invalid"
_CHUNK = 1 << 20


def signed_path(cid: str, path_info: str) -> str:
    """The "@path" of an invocation: the gateway's URL path, `/<cid>` followed by PATH_INFO."""
    return f"/{cid}{path_info}"


def new_nonce() -> str:
    return secrets.token_urlsafe(24)


def content_digest(body: bytes | BinaryIO) -> str:
    """The RFC 9530 `Content-Digest` value of `body`: `sha-256=:<base64>:`; a file is read in
    chunks from where it stands."""
    hasher = hashlib.sha256()
    if isinstance(body, bytes):
        hasher.update(body)
    else:
        for chunk in iter(lambda: body.read(_CHUNK), b""):
            hasher.update(chunk)
    return str(http_sf.ser({DIGEST_ALGORITHM: hasher.digest()}))


# -- the message the library reads


class _Headers:
    """Field lines in order, as the library's message interface wants them; writable only for
    the signer (`apply` replaces Signature-Input and Signature)."""

    def __init__(self, lines: Iterable[tuple[str, str]]) -> None:
        self.lines = list(lines)

    def items(self) -> list[tuple[str, str]]:
        return list(self.lines)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(name for name, _ in self.lines))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(n.lower() == name.lower() for n, _ in self.lines)

    def __setitem__(self, name: str, value: str) -> None:
        del self[name]
        self.lines.append((name, value))

    def __delitem__(self, name: str) -> None:
        self.lines = [(n, v) for n, v in self.lines if n.lower() != name.lower()]

    def get(self, name: str) -> str | None:
        values = [v for n, v in self.lines if n.lower() == name.lower()]
        return ", ".join(v.strip(" \t") for v in values) if values else None


@dataclass
class _Message:
    method: str
    url: str
    headers: _Headers = field(default_factory=lambda: _Headers(()))


def _message(method: str, path: str, query: str, headers: Iterable[tuple[str, str]]) -> _Message:
    if not path.startswith("/") or "?" in path or "#" in path:
        raise BadSignature(f"the path {path!r} cannot be signed or verified: it must start with / and hold no ? or #")
    if "#" in query:
        raise BadSignature("the query cannot be signed or verified: it holds a #")
    return _Message(method, _ORIGIN + path + (f"?{query}" if query else ""), _Headers(headers))


class _AccountKeys(HTTPSignatureKeyResolver):
    """A keyid is the payer's account, `ed25519:<base32>`: the public key itself."""

    def resolve_public_key(self, key_id: str) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(parse_public(key_id, ED25519))

    def resolve_private_key(self, key_id: str) -> Any:
        raise NotImplementedError("payers sign with their SigningKey, never through a resolver")


class _Verifier(HTTPMessageVerifier):
    """The library's verifier with our clock: `created` and `expires` were checked against `now`
    by `_check_params` already, so its own check (against the wall clock) is not run again."""

    def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
        return None


# -- signing


def sign_request(
    key: SigningKey,
    *,
    method: str,
    path: str,
    query: str,
    headers: list[tuple[str, str]],
    body_digest: str,
    created: int | None = None,
    nonce: str | None = None,
) -> list[tuple[str, str]]:
    """The fields to add to the request so that `key`'s owner pays for it: Content-Digest,
    Signature-Input and Signature. `path` is the gateway's whole path (`signed_path`),
    `body_digest` the `content_digest` of the body. BadSignature if the request cannot be signed
    (it carries one of those fields already, a path with '?', a malformed digest, a bad nonce)."""
    for name, _ in headers:
        if name.lower() in SIGNATURE_FIELDS:
            raise BadSignature(f"the request carries a {name} field already: it is the payer's signature's to set")
    _digest_of(body_digest)
    nonce = new_nonce() if nonce is None else nonce
    if not NONCE.fullmatch(nonce):
        raise BadSignature(f"the nonce {nonce!r} is not 16 to 128 of A-Za-z0-9+/=_.~-")
    when = datetime.datetime.fromtimestamp(int(time.time()) if created is None else created, datetime.UTC)
    message = _message(method, path, query, [("Content-Digest", body_digest)])
    signer = HTTPMessageSigner(signature_algorithm=algorithms.ED25519)
    try:
        prepared = signer.prepare(
            message,
            key_id=key.public,
            created=when,
            nonce=nonce,
            label=SIGNATURE_LABEL,
            tag=SIGNATURE_TAG,
            covered_component_ids=COVERED,
            use_existing_digest=True,
        )
        signer.apply(message, prepared, key.sign(prepared.signature_base))
    except HTTPMessageSignaturesException as exc:
        raise BadSignature(f"the request cannot be signed: {exc}") from None
    return message.headers.items()


# -- verifying


def verify_request(
    *,
    method: str,
    path: str,
    query: str,
    headers: list[tuple[str, str]],
    body_digest: str,
    now: float,
    max_age: float = MAX_AGE,
    nonces: NonceStore | None = None,
    entry: str | None = None,
) -> str | None:
    """Who pays for this request: None when it carries no `payer` signature (its deployment's
    owner pays), else the payer's account (`ed25519:…`) once the signature verifies. `path` is the
    gateway's whole path (`signed_path`), `body_digest` the `content_digest` of the body bytes
    that will be used, `now` the current time. With `nonces`, the nonce is recorded (for `entry`)
    and a second use refused; without, nothing is recorded (the gateway's early check). Raises
    BadSignature naming the reason, or Replayed."""
    members = _payer_members(_Headers(headers))
    if members is None:
        return None
    message = _message(method, path, query, headers)
    keyid, nonce, created = _check_params(members[0], now=now, max_age=max_age)
    verifier = _Verifier(signature_algorithm=algorithms.ED25519, key_resolver=_AccountKeys())
    try:
        (result,) = verifier.verify(
            _payer_only(message, members),
            max_age=None,
            expect_tag=SIGNATURE_TAG,
            expect_label=SIGNATURE_LABEL,
            require_components=COVERED,
        )
    except (InvalidSignature, HTTPMessageSignaturesException) as exc:
        why = str(exc) or "it is not the keyid's signature over this method, path, query and Content-Digest"
        raise BadSignature(f"the payer's signature does not verify: {why}") from None
    signed = _digest_of(result.covered_components['"content-digest"'], "the signed Content-Digest")
    if signed != _digest_of(body_digest):
        raise BadSignature("the body does not match the signed Content-Digest (the body was changed)")
    if nonces is not None:
        nonces.use(keyid, nonce, created, now, entry=entry)
    return keyid


def _payer_members(headers: _Headers) -> tuple[Any, Any] | None:
    """The parsed `payer` members of Signature-Input and Signature, or None when there are none."""
    inputs, signatures = headers.get("Signature-Input"), headers.get("Signature")
    if inputs is None and signatures is None:
        return None

    def once(key: str, context: str) -> None:
        if context == "dictionary" and key == SIGNATURE_LABEL:
            raise BadSignature(f"two {SIGNATURE_LABEL!r} members in one field")

    fields: list[Any] = []
    for name, value in (("Signature-Input", inputs), ("Signature", signatures)):
        try:
            fields.append(http_sf.parse((value or "").encode("ascii"), tltype="dictionary", on_duplicate_key=once))
        except (ValueError, TypeError, UnicodeError) as exc:
            raise BadSignature(f"the {name} field is not a structured dictionary: {exc}") from None
    if SIGNATURE_LABEL not in fields[0] and SIGNATURE_LABEL not in fields[1]:
        return None  # other parties' signatures only: not ours to judge
    if SIGNATURE_LABEL not in fields[0] or SIGNATURE_LABEL not in fields[1]:
        raise BadSignature(f"the {SIGNATURE_LABEL!r} signature needs both a Signature-Input and a Signature member")
    member = fields[0][SIGNATURE_LABEL]
    if not isinstance(member[0], list):
        raise BadSignature(f"Signature-Input's {SIGNATURE_LABEL!r} member is not an inner list of components")
    return member, fields[1][SIGNATURE_LABEL]


def _payer_only(message: _Message, members: tuple[Any, Any]) -> _Message:
    """The message with only the `payer` members of the signature fields, so that the library
    judges our signature alone (it refuses a message if any member is malformed). Serializing
    again changes nothing signed: the library rebuilds "@signature-params" from the parsed list."""
    kept = [(n, v) for n, v in message.headers.items() if n.lower() not in ("signature-input", "signature")]
    inputs, signature = (str(http_sf.ser({SIGNATURE_LABEL: member})) for member in members)
    return _Message(
        message.method, message.url, _Headers([*kept, ("Signature-Input", inputs), ("Signature", signature)])
    )


def _check_params(member: Any, *, now: float, max_age: float) -> tuple[str, str, int]:
    params = member[1]
    if params.get("tag") != SIGNATURE_TAG:
        raise BadSignature(f"the payer's signature must carry tag={SIGNATURE_TAG!r}")
    if params.get("alg", ED25519) != ED25519:
        raise BadSignature(f"unknown signature algorithm {params['alg']!r}: payers sign with ed25519")
    keyid = params.get("keyid")
    try:
        parse_public(keyid if isinstance(keyid, str) else "", ED25519)
    except KeyFileError:
        raise BadSignature(
            f"the keyid {keyid!r} is not an ed25519 account ('ed25519:' and 52 base32 letters)"
        ) from None
    created = params.get("created")
    if type(created) is not int:
        raise BadSignature("the payer's signature has no created time (an integer)")
    if created > now + CLOCK_SKEW:
        raise BadSignature(f"the signature was created {created - now:.0f} s in the future (clocks differ?)")
    if created + max_age + CLOCK_SKEW < now:
        raise BadSignature(f"the signature is {now - created:.0f} s old: at most {max_age:.0f} s are accepted")
    expires = params.get("expires")
    if expires is not None and (type(expires) is not int or expires + CLOCK_SKEW < now):
        raise BadSignature("the signature has expired")
    nonce = params.get("nonce")
    if not isinstance(nonce, str):
        raise BadSignature("the payer's signature has no nonce")
    if not NONCE.fullmatch(nonce):
        raise BadSignature("the nonce must be 16 to 128 of A-Za-z0-9+/=_.~-")
    return str(keyid), nonce, created


def _digest_of(value: str, what: str = "the Content-Digest") -> bytes:
    """The sha-256 member of a Content-Digest value; BadSignature unless it is exactly one."""
    parsed: Any
    try:
        parsed = http_sf.parse(value.encode("ascii"), tltype="dictionary")
    except (ValueError, TypeError, UnicodeError):
        raise BadSignature(f"{what} is not a structured dictionary") from None
    member = parsed.get(DIGEST_ALGORITHM)
    if set(parsed) != {DIGEST_ALGORITHM} or not isinstance(member[0], bytes) or len(member[0]) != 32:
        raise BadSignature(f"{what} must hold exactly one sha-256 digest (sha-256=:<32 bytes base64>:)")
    return member[0]
