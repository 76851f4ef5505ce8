"""Payers' RFC 9421 signatures (cutor_spool/deployments/payers.py, docs/payers.md): a round trip,
every tampering refused with its reason, stale and future signatures, replays refused by the
NonceStore even when processes race, the signature `cutor-spool invoke --payer` drops, and wire
compatibility: the library's own verifier, a signature base built by hand and checked with
`cryptography`, and the RFC's Ed25519 test vector (appendix B.2.6)."""

from __future__ import annotations

import base64
import datetime
import io
import json
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from conftest import CLI
from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from http_message_signatures import HTTPMessageSigner, HTTPMessageVerifier, MappingKeyResolver, algorithms

from cutor_spool.deployments import keys
from cutor_spool.deployments.nonces import CLOCK_SKEW, NonceStore, Replayed
from cutor_spool.deployments.payers import (
    SIGNATURE_LABEL,
    SIGNATURE_TAG,
    BadSignature,
    content_digest,
    sign_request,
    signed_path,
    verify_request,
)
from cutor_spool.deployments.store import Store

CID = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
PATH = signed_path(CID, "/orders/7")
BODY = b'{"hello": "world"}'
NOW = 1_800_000_000.0


def _sign(key: keys.SigningKey, **overrides: Any) -> dict[str, Any]:
    """A signed request: its fields as verify_request takes them."""
    request: dict[str, Any] = {
        "method": "POST",
        "path": PATH,
        "query": "size=2&pet=dog",
        "headers": [("Content-Type", "application/json"), ("X-Agent", "test")],
    }
    request.update({k: v for k, v in overrides.items() if k in request})
    signature = sign_request(
        key,
        **request,
        body_digest=content_digest(BODY),
        created=overrides.get("created", int(NOW)),
        nonce=overrides.get("nonce"),
    )
    request["headers"] = request["headers"] + signature
    return request


def _verify(
    request: dict[str, Any],
    *,
    body: bytes = BODY,
    now: float = NOW,
    nonces: NonceStore | None = None,
    entry: str | None = None,
) -> str | None:
    digest = content_digest(body)
    return verify_request(**request, body_digest=digest, now=now, max_age=300, nonces=nonces, entry=entry)


def _field(request: dict[str, Any], name: str) -> str:
    (value,) = [v for n, v in request["headers"] if n.lower() == name.lower()]
    return str(value)


def _replace(request: dict[str, Any], name: str, value: str) -> dict[str, Any]:
    headers = [(n, value if n.lower() == name.lower() else v) for n, v in request["headers"]]
    return {**request, "headers": headers}


@pytest.fixture
def payer() -> keys.SigningKey:
    return keys.SigningKey.generate()


def test_content_digest_is_rfc_9530s_and_streams_a_file() -> None:
    # RFC 9530 section 2's example: the content {"hello": "world"} in sha-256.
    assert content_digest(BODY) == "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
    big = bytes(range(256)) * 20_000  # 5 MB: several chunks
    assert content_digest(io.BytesIO(big)) == content_digest(big)


def test_a_signed_request_verifies_as_its_payers_account(payer: keys.SigningKey) -> None:
    request = _sign(payer)
    assert _verify(request) == payer.public
    names = [n for n, _ in request["headers"]][-3:]
    assert names == ["Content-Digest", "Signature-Input", "Signature"]
    # header names are case-insensitive; repeated Signature lines are one dictionary (RFC 9110)
    lowered = {**request, "headers": [(n.lower(), v) for n, v in request["headers"]]}
    assert _verify(lowered) == payer.public
    inputs = _field(request, "Signature-Input")
    assert inputs.startswith(f'{SIGNATURE_LABEL}=("@method" "@path" "@query" "content-digest");created=')
    assert f'tag="{SIGNATURE_TAG}"' in inputs and f'keyid="{payer.public}"' in inputs and 'alg="ed25519"' in inputs


def test_an_unsigned_request_has_no_payer_and_other_parties_signatures_are_left_alone(payer: keys.SigningKey) -> None:
    request = _sign(payer)
    unsigned = {**request, "headers": request["headers"][:2]}
    assert _verify(unsigned) is None  # the deployment's owner pays
    assert _verify({**unsigned, "path": "/odd?path#"}) is None  # not the payers' business
    relabelled = {
        **request,
        "headers": [(n, v.replace(f"{SIGNATURE_LABEL}=", "proxy=")) for n, v in request["headers"]],
    }
    assert _verify(relabelled) is None
    foreign_input = 'proxy=("@method");created=1;keyid="gw"'
    crowded = [
        (n, f'{foreign_input}, {v}, lone=("@path")' if n == "Signature-Input" else f"{v}, proxy=:AAAA:")
        if n.startswith("Signature")
        else (n, v)
        for n, v in request["headers"]
    ]
    assert _verify({**request, "headers": crowded}) == payer.public  # other members, even broken ones
    split = [*request["headers"], ("signature", "proxy=:AAAA:"), ("SIGNATURE-INPUT", foreign_input)]
    assert _verify({**request, "headers": split}) == payer.public  # repeated lines make one field
    twice = [(n, f"{v}, {v}") if n.startswith("Signature") else (n, v) for n, v in request["headers"]]
    with pytest.raises(BadSignature, match="two 'payer' members"):
        _verify({**request, "headers": twice})
    half = {**request, "headers": [(n, v) for n, v in request["headers"] if n != "Signature"]}
    with pytest.raises(BadSignature, match="both a Signature-Input and a Signature"):
        _verify(half)
    with pytest.raises(BadSignature, match="not a structured dictionary"):
        _verify(_replace(request, "Signature", "payer=:not base64"))


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"method": "PUT"}, "does not verify"),
        ({"path": signed_path(CID, "/orders/8")}, "does not verify"),
        ({"path": signed_path("bafkreiother", "/orders/7")}, "does not verify"),  # another deployment
        ({"query": "size=200&pet=dog"}, "does not verify"),
        ({"query": ""}, "does not verify"),
    ],
)
def test_a_changed_method_path_or_query_is_refused(payer: keys.SigningKey, change: dict[str, str], why: str) -> None:
    with pytest.raises(BadSignature, match=why):
        _verify({**_sign(payer), **change})


def test_path_and_query_cannot_trade_characters(payer: keys.SigningKey) -> None:
    request = _sign(payer)
    traded = {**request, "path": f"{PATH}?size=2&pet=dog", "query": ""}  # the same URL, another PATH_INFO
    with pytest.raises(BadSignature, match=r"hold no \? or #"):
        _verify(traded)
    with pytest.raises(BadSignature, match="cannot be signed or verified"):
        _sign(payer, path=f"{PATH}?a=1")


def test_a_changed_body_digest_or_signature_parameter_is_refused(payer: keys.SigningKey) -> None:
    request = _sign(payer)
    with pytest.raises(BadSignature, match="the body does not match the signed Content-Digest"):
        _verify(request, body=BODY + b" ")
    with pytest.raises(BadSignature, match="does not verify"):  # a digest matching the new body
        _verify(_replace(request, "Content-Digest", content_digest(b"other")), body=b"other")
    with pytest.raises(BadSignature, match="does not verify"):  # a later created
        _verify(
            _replace(
                request, "Signature-Input", _field(request, "Signature-Input").replace("created=18", "created=19")
            ),
            now=1.9e9,
        )
    other = keys.SigningKey.generate()
    with pytest.raises(BadSignature, match="does not verify"):  # someone else named as the payer
        _verify(
            _replace(request, "Signature-Input", _field(request, "Signature-Input").replace(payer.public, other.public))
        )
    with pytest.raises(BadSignature, match="not an ed25519 account"):
        _verify(_replace(request, "Signature-Input", _field(request, "Signature-Input").replace(payer.public, "alice")))
    with pytest.raises(BadSignature, match="unknown signature algorithm"):
        _verify(
            _replace(
                request,
                "Signature-Input",
                _field(request, "Signature-Input").replace('alg="ed25519"', 'alg="hmac-sha256"'),
            )
        )
    with pytest.raises(BadSignature, match="tag="):
        _verify(
            _replace(request, "Signature-Input", _field(request, "Signature-Input").replace(SIGNATURE_TAG, "elsewhere"))
        )
    with pytest.raises(BadSignature, match="does not verify"):
        _verify(_replace(request, "Signature", "payer=:" + base64.b64encode(bytes(64)).decode() + ":"))


def test_stale_and_future_signatures_are_refused(payer: keys.SigningKey) -> None:
    with pytest.raises(BadSignature, match="s old: at most 300 s"):
        _verify(_sign(payer, created=int(NOW - 300 - CLOCK_SKEW - 1)))
    assert _verify(_sign(payer, created=int(NOW - 300))) == payer.public
    with pytest.raises(BadSignature, match="in the future"):
        _verify(_sign(payer, created=int(NOW + CLOCK_SKEW + 2)))
    assert _verify(_sign(payer, created=int(NOW + CLOCK_SKEW - 1))) == payer.public


def _library_signed(key: keys.SigningKey, **params: Any) -> dict[str, Any]:
    """A request signed by the library's own signer, which makes the Content-Digest from the body
    itself, with `cryptography`'s Ed25519 (the same seed): another client's signature, with the
    parameters we choose."""
    message = _LibraryMessage("POST", f"https://gw.example{PATH}?size=2&pet=dog", {})
    private = Ed25519PrivateKey.from_private_bytes(bytes(key.key))
    signer = HTTPMessageSigner(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={key.public: private}),
    )
    chosen: dict[str, Any] = {
        "label": SIGNATURE_LABEL,
        "tag": SIGNATURE_TAG,
        "covered_component_ids": ("@method", "@path", "@query", "content-digest"),
    }
    signer.sign(message, key_id=key.public, body=BODY, **{**chosen, **params})
    return {"method": "POST", "path": PATH, "query": "size=2&pet=dog", "headers": list(message.headers.items())}


class _LibraryMessage:
    def __init__(self, method: str, url: str, headers: dict[str, str]) -> None:
        self.method, self.url, self.headers = method, url, headers


def test_another_clients_signature_verifies_and_missing_parts_are_refused(payer: keys.SigningKey) -> None:
    when = datetime.datetime.fromtimestamp(int(NOW), datetime.UTC)
    nonce = "n" * 22
    assert _verify(_library_signed(payer, created=when, nonce=nonce)) == payer.public
    with pytest.raises(BadSignature, match="no nonce"):
        _verify(_library_signed(payer, created=when))
    with pytest.raises(BadSignature, match="nonce must be 16 to 128"):
        _verify(_library_signed(payer, created=when, nonce="short"))
    with pytest.raises(BadSignature, match="Required component"):
        _verify(
            _library_signed(
                payer, created=when, nonce=nonce, covered_component_ids=("@method", "@path", "content-digest")
            )
        )


def test_signatures_verify_with_the_librarys_verifier_and_by_hand(payer: keys.SigningKey) -> None:
    created = int(time.time())
    request = _sign(payer, created=created, nonce="abcdefghijklmnop-1")
    public = Ed25519PublicKey.from_public_bytes(keys.parse_public(payer.public, keys.ED25519))
    message = _LibraryMessage("POST", f"https://gw.example{PATH}?size=2&pet=dog", dict(request["headers"]))
    verifier = HTTPMessageVerifier(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(public_keys={payer.public: public}, private_keys={}),
    )
    (result,) = verifier.verify(message, expect_tag=SIGNATURE_TAG, expect_label=SIGNATURE_LABEL, body=BODY)
    assert result.parameters["keyid"] == payer.public and result.nonce == "abcdefghijklmnop-1"
    # RFC 9421 section 2.5, by hand: one line per covered component, then @signature-params.
    params = _field(request, "Signature-Input").removeprefix(f"{SIGNATURE_LABEL}=")
    base = "\n".join(
        [
            '"@method": POST',
            f'"@path": {PATH}',
            '"@query": ?size=2&pet=dog',
            f'"content-digest": {content_digest(BODY)}',
            f'"@signature-params": {params}',
        ]
    ).encode()
    signature = base64.b64decode(_field(request, "Signature").removeprefix(f"{SIGNATURE_LABEL}=:").removesuffix(":"))
    public.verify(signature, base)
    with pytest.raises(CryptoInvalidSignature):
        public.verify(signature, base.replace(b"POST", b"PUT"))


# RFC 9421 appendix B.1.4 (test-key-ed25519, as a JWK's d and x) and B.2.6.
RFC_SEED = base64.urlsafe_b64decode("n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU=")
RFC_PUBLIC = base64.urlsafe_b64decode("JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs=")
B26_INPUT = (
    'sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");'
    'created=1618884473;keyid="test-key-ed25519"'
)
B26_SIGNATURE = "wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw=="
B26_BASE = "\n".join(
    [
        '"date": Tue, 20 Apr 2021 02:07:55 GMT',
        '"@method": POST',
        '"@path": /foo',
        '"@authority": example.com',
        '"content-type": application/json',
        '"content-length": 18',
        '"@signature-params": ' + B26_INPUT.removeprefix("sig-b26="),
    ]
).encode()


def test_rfc_9421_b26_ed25519_vector() -> None:
    # Our signing keys (libsodium) make the RFC's signature from the RFC's key, byte for byte.
    key = keys.SigningKey(nacl.signing.SigningKey(RFC_SEED))
    assert key.public == keys.public_text(keys.ED25519, RFC_PUBLIC)
    assert base64.b64encode(key.sign(B26_BASE)).decode() == B26_SIGNATURE
    # and the library we verify with reads the RFC's request and accepts its signature.
    message = _LibraryMessage(
        "POST",
        "https://example.com/foo?param=Value&Pet=dog",
        {
            "Host": "example.com",
            "Date": "Tue, 20 Apr 2021 02:07:55 GMT",
            "Content-Type": "application/json",
            "Content-Length": "18",
            "Signature-Input": B26_INPUT,
            "Signature": f"sig-b26=:{B26_SIGNATURE}:",
        },
    )
    resolver = MappingKeyResolver(
        public_keys={"test-key-ed25519": Ed25519PublicKey.from_public_bytes(RFC_PUBLIC)}, private_keys={}
    )
    (result,) = HTTPMessageVerifier(signature_algorithm=algorithms.ED25519, key_resolver=resolver).verify(
        message, max_age=None
    )
    assert result.label == "sig-b26" and result.covered_components['"@signature-params"'] == B26_INPUT.removeprefix(
        "sig-b26="
    )


# -- replays


def test_a_replayed_signature_is_refused(tmp_path: Path, payer: keys.SigningKey) -> None:
    nonces = NonceStore(tmp_path, max_age=300)
    request = _sign(payer)
    assert _verify(request, nonces=nonces, entry="entry-1") == payer.public
    assert _verify(request, nonces=nonces, entry="entry-1") == payer.public  # the same entry, retried
    with pytest.raises(Replayed, match="paid for another request already"):
        _verify(request, nonces=nonces, entry="entry-2")
    with pytest.raises(Replayed):
        _verify(request, nonces=nonces)
    assert _verify(request) == payer.public  # the gateway's early check records nothing
    assert (tmp_path / "ledger" / "nonces").is_dir()


def _use(args: tuple[Path, str, str, int, int]) -> int:
    """1 if this attempt (its own spool entry, `attempt`) got the nonce, 0 if refused as a replay."""
    root, keyid, nonce, created, attempt = args
    try:
        NonceStore(root, max_age=300).use(keyid, nonce, created, float(created), entry=f"{nonce}-{attempt}")
    except Replayed:
        return 0
    return 1


def test_processes_racing_to_use_one_nonce_one_wins(tmp_path: Path, payer: keys.SigningKey) -> None:
    created = int(time.time())
    nonces = [f"race-nonce-{i:06d}" for i in range(200)]
    tasks = [(tmp_path, payer.public, nonce, created, attempt) for nonce in nonces for attempt in range(4)]
    with ProcessPoolExecutor(max_workers=4) as pool:
        wins = list(pool.map(_use, tasks, chunksize=1))
    per_nonce = [sum(wins[i * 4 : i * 4 + 4]) for i in range(len(nonces))]
    assert per_nonce == [1] * len(nonces)
    bucket = tmp_path / "ledger" / "nonces" / str(created // NonceStore.BUCKET)
    assert sorted(p.name.startswith(".") for p in bucket.iterdir()) == [False] * 200  # no private names left


def test_sweep_forgets_only_nonces_too_old_to_verify(tmp_path: Path, payer: keys.SigningKey) -> None:
    nonces = NonceStore(tmp_path, max_age=300)
    old = _sign(payer, created=int(NOW), nonce="old-nonce-0000000001")
    recent = _sign(payer, created=int(NOW) + 600, nonce="recent-nonce-00000001")
    assert _verify(old, nonces=nonces) == payer.public
    assert _verify(recent, now=NOW + 600, nonces=nonces) == payer.public
    # the old one's bucket holds signatures created up to NOW + 59, verifiable until NOW + 389
    assert int(NOW) % NonceStore.BUCKET == 0
    assert nonces.sweep(NOW + 60 + 300 + 2 * CLOCK_SKEW) == 0
    later = NOW + 600 + 30
    assert nonces.sweep(later) == 1
    assert nonces.sweep(later) == 0
    with pytest.raises(Replayed):  # still remembered
        _verify(recent, now=later, nonces=nonces)
    with pytest.raises(BadSignature, match="s old"):  # forgotten, and refused by its age
        _verify(old, now=later, nonces=nonces)
    with pytest.raises(BadSignature, match="s old"):  # the store itself will not take it either
        nonces.use(payer.public, "old-nonce-0000000001", int(NOW), later)


# -- cutor-spool invoke --payer


def test_invoke_with_a_payer_drops_a_request_whose_signature_verifies(spool: Path, tmp_path: Path) -> None:
    cid = Store(spool).put(b"a deployment's spec, as far as invoke looks")
    key_file = tmp_path / "payer.key"
    made = subprocess.run([*CLI, "keys", "new", "--out", str(key_file)], check=True, capture_output=True)
    account = made.stdout.decode().strip()
    body = b"\x00binary body\xff" * 1000
    proc = subprocess.run(
        [
            *CLI,
            "--spool",
            str(spool),
            "invoke",
            cid,
            "--data",
            "-",
            "-X",
            "PUT",
            "--path",
            "/items/3",
            "--query",
            "a=1&b=two",
            "-H",
            "Content-Type: application/octet-stream",
            "--payer",
            str(key_file),
        ],
        input=body,
        capture_output=True,
        check=True,
    )
    entry = spool / "invocations" / "incoming" / proc.stdout.decode().strip()
    request = json.loads((entry / "request.json").read_text())
    assert (entry / "body").read_bytes() == body
    assert [name for name, _ in request["headers"]] == [
        "Content-Type",
        "Content-Digest",
        "Signature-Input",
        "Signature",
    ]
    assert str(key_file) not in (entry / "request.json").read_text()
    with open(entry / "body", "rb") as fh:
        digest = content_digest(fh)
    fields = {
        "method": request["method"],
        "path": signed_path(request["deployment"], request["path"]),
        "query": request["query"],
        "headers": [tuple(h) for h in request["headers"]],
    }
    nonces = NonceStore(spool, max_age=300)
    assert verify_request(**fields, body_digest=digest, now=time.time(), max_age=300, nonces=nonces) == account
    with pytest.raises(Replayed):
        verify_request(**fields, body_digest=digest, now=time.time(), max_age=300, nonces=nonces)

    before = sorted((spool / "invocations" / "incoming").iterdir())
    missing = subprocess.run(
        [*CLI, "--spool", str(spool), "invoke", cid, "--payer", str(tmp_path / "nope.key")],
        capture_output=True,
        check=False,
    )
    assert missing.returncode == 2 and b"no such key file" in missing.stderr
    preset = subprocess.run(
        [*CLI, "--spool", str(spool), "invoke", cid, "-H", "Signature: x=:AA==:", "--payer", str(key_file)],
        capture_output=True,
        check=False,
    )
    assert preset.returncode == 2 and b"carries a Signature field already" in preset.stderr
    assert sorted((spool / "invocations" / "incoming").iterdir()) == before
