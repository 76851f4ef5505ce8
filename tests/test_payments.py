"""Invocations paid from the escrow, end to end: a real gateway (uvicorn on the loopback), real
executors and bubblewrap, the real `ledger` and `invoke` commands. What a payer and an operator
check: which account a signed and an unsigned request charge and by how much (result/payment.json
against the ledger's balances), 402 with nothing run when funds are short (at the gateway, and at
the executor for a request dropped past it), a replayed signature refused and not charged, one
charge per Idempotency-Key, a worker killed mid-invocation charging once, and `ledger audit`
agreeing with the sum of the charges."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, wait_until, write_config
from test_gateway import _entries, gateways  # noqa: F401 (gateways: the fixture)
from test_invoke import built, deploy, invoke, server_key  # noqa: F401 (server_key: the fixture)
from test_warm import APP, _server

from cutor_spool.deployments import keys
from cutor_spool.deployments.nonces import NonceStore
from cutor_spool.deployments.payers import content_digest, sign_request, signed_path
from cutor_spool.deployments.spec import load_deployment
from cutor_spool.deployments.store import Store
from cutor_spool.documents.deployment import DeploymentState
from cutor_spool.ledger import Ledger, cost_of
from cutor_spool.runner.invocations.payment import Housekeeping

FEE, RATE, WALL = 100_000, 1_000_000, 2  # 0.1 credit a request, 1 credit a second, a 2 s wall limit
HOLD = cost_of(FEE, RATE, WALL)  # 2.1 credits
ECHO = "printf 'Content-Type: text/plain\\r\\n\\r\\n'\necho \"paid $PATH_INFO\"\ncat\n"


def _config(spool: Path, **more: Any) -> None:
    write_config(spool, deployments={"fee": FEE, "rate": RATE, "invoke_wall_time": f"{WALL}s"}, **more)


def _ledger(spool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "--spool", str(spool), "ledger", *args], capture_output=True, text=True, check=False)


def _deposit(spool: Path, account: str, credits: str) -> None:
    done = _ledger(spool, "deposit", account, credits)
    assert done.returncode == 0, done.stderr


def _available(spool: Path, account: str) -> int:
    balance = Ledger(spool).balance(account)
    assert balance.held == 0, balance  # every hold of a finished request is settled or released
    return balance.available


def _payment(spool: Path, entry: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((spool / "invocations" / "done" / entry / "result" / "payment.json").read_text())
    return data


def _signed(key: keys.SigningKey, cid: str, path: str, body: bytes) -> dict[str, str]:
    signed = sign_request(
        key, method="POST", path=signed_path(cid, path), query="", headers=[], body_digest=content_digest(body)
    )
    return dict(signed)


def _audit_agrees(spool: Path, charges: list[int]) -> None:
    done = _ledger(spool, "audit", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["charged"] == sum(charges), report


@pytest.mark.slow
def test_signed_and_unsigned_requests_charge_their_payer_and_short_funds_or_replays_run_nothing(
    spool: Path,
    tmp_path: Path,
    server_key: Path,  # noqa: F811 (the fixture imported above)
    executors: Any,
    gateways: Any,  # noqa: F811
) -> None:
    _config(spool)
    executors(spool, "--server-key", str(server_key))
    cid = deploy(spool, tmp_path / "app", {"run": {"file": "run.sh"}}, {"run.sh": ECHO})
    assert built(spool, cid).state == DeploymentState.READY
    owner = load_deployment(Store(spool), cid).spec.owner
    payer_key = keys.SigningKey.generate()
    payer = payer_key.public
    _deposit(spool, owner, "10")
    _deposit(spool, payer, "2.3")
    gateway = gateways(spool)
    charges: list[int] = []

    # Unsigned: the owner pays, fee + rate x the measured wall time, capped at the hold.
    status, answer, data = gateway.request("POST", f"/{cid}/a", b"from anyone")
    assert (status, data) == (200, b"paid /a\nfrom anyone")
    paid = _payment(spool, answer["X-Request-Id"])
    assert paid["payer"] == owner and paid["held"] == HOLD and FEE < paid["charged"] < HOLD
    charges.append(paid["charged"])
    assert _available(spool, owner) == 10_000_000 - paid["charged"]
    assert _available(spool, payer) == 2_300_000

    # Signed: the payer pays, the owner nothing more.
    body = b"from the payer"
    first = _signed(payer_key, cid, "/b", body)
    status, answer, data = gateway.request("POST", f"/{cid}/b", body, first)
    assert (status, data) == (200, b"paid /b\nfrom the payer")
    paid = _payment(spool, answer["X-Request-Id"])
    assert paid["payer"] == payer and FEE < paid["charged"] < HOLD
    charges.append(paid["charged"])
    left = 2_300_000 - paid["charged"]
    assert _available(spool, payer) == left and _available(spool, owner) == 10_000_000 - charges[0]

    # The same signed request again: a replay, refused by the executor (401), nothing charged.
    status, refused = gateway.json("POST", f"/{cid}/b", body=body, headers=first)
    assert status == 401 and "paid for another request already" in json.dumps(refused), refused
    assert _available(spool, payer) == left

    # A tampered body under a good signature: 401 from the executor, nothing charged.
    status, refused = gateway.json(
        "POST", f"/{cid}/b", body=b"from someone else", headers=_signed(payer_key, cid, "/b", body)
    )
    assert status == 401, refused
    assert _available(spool, payer) == left

    # A second paid request takes the payer below one hold: the next is 402, nothing dropped.
    status, answer, _ = gateway.request("POST", f"/{cid}/c", b"", _signed(payer_key, cid, "/c", b""))
    assert status == 200
    charges.append(_payment(spool, answer["X-Request-Id"])["charged"])
    left -= charges[-1]
    assert left < HOLD and _available(spool, payer) == left
    before = _entries(spool)
    status, refused = gateway.json("POST", f"/{cid}/d", body=b"", headers=_signed(payer_key, cid, "/d", b""))
    assert status == 402 and "insufficient funds" in refused["error"], refused
    assert _entries(spool) == before and _available(spool, payer) == left

    # Past the gateway (a drop straight into the spool): the executor refuses it the same way.
    key_file = tmp_path / "payer.key"
    keys.write_signing_key(payer_key, key_file)
    code, result = invoke(spool, cid, "--payer", str(key_file), data=b"x")
    refused_status = result["status"]
    assert code == 10 and refused_status["state"] == "invalid", result
    problem = refused_status["errors"][0]
    assert problem["where"] == "payer" and "insufficient funds" in problem["message"], problem
    assert not (spool / "invocations" / "done" / refused_status["id"] / "result" / "payment.json").exists()
    assert _available(spool, payer) == left

    _audit_agrees(spool, charges)


@pytest.mark.slow
def test_one_idempotency_key_is_charged_once(
    spool: Path,
    tmp_path: Path,
    server_key: Path,  # noqa: F811
    executors: Any,
    gateways: Any,  # noqa: F811
) -> None:
    _config(spool)
    executors(spool, "--server-key", str(server_key))
    cid = deploy(spool, tmp_path / "app", {"run": {"file": "run.sh"}}, {"run.sh": ECHO + "date +%s%N\n"})
    assert built(spool, cid).state == DeploymentState.READY
    owner = load_deployment(Store(spool), cid).spec.owner
    _deposit(spool, owner, "5")
    gateway = gateways(spool)
    answers = [gateway.request("POST", f"/{cid}/k", b"once", {"Idempotency-Key": "order-17"}) for _ in range(2)]
    assert [a[0] for a in answers] == [200, 200] and answers[0][2] == answers[1][2]  # the same bytes, the clock too
    entry = answers[0][1]["X-Request-Id"]
    assert answers[1][1]["X-Request-Id"] == entry
    charged = _payment(spool, entry)["charged"]
    settles = [r for r in Ledger(spool).history(owner) if r.kind == "settle"]
    assert [r.hold_id for r in settles] == [entry]
    assert _available(spool, owner) == 5_000_000 - charged
    _audit_agrees(spool, [charged])


@pytest.mark.slow
def test_a_worker_killed_mid_invocation_leaves_one_hold_and_one_charge(
    spool: Path,
    tmp_path: Path,
    server_key: Path,  # noqa: F811
    executors: Any,
) -> None:
    # Fault injection: the test SIGKILLs the executor that holds the invocation's lease (what a
    # crash, an OOM kill or a lost host does); another executor takes the entry once its lease
    # expires, finds the entry's hold live and runs it: one hold, one charge.
    _config(spool, lease_timeout="3s", heartbeat="1s")
    first = executors(spool, "--server-key", str(server_key))
    cid = deploy(spool, tmp_path / "app", {"run": {"file": "run.sh"}}, {"run.sh": "sleep 1\n" + ECHO})
    assert built(spool, cid).state == DeploymentState.READY
    owner = load_deployment(Store(spool), cid).spec.owner
    _deposit(spool, owner, "5")
    dropped = subprocess.run(
        [*CLI, "--spool", str(spool), "invoke", cid, "--data", "-", "--json"], input=b"slow", capture_output=True
    )
    assert dropped.returncode == 0, dropped.stderr
    entry = json.loads(dropped.stdout)["id"]
    wait_until(lambda: Ledger(spool).balance(owner).held == HOLD, 30, "the invocation's hold")
    first.kill()
    executors(spool, "--server-key", str(server_key))
    status_file = spool / "invocations" / "done" / entry / "result" / "status.json"
    wait_until(status_file.is_file, 60, "the invocation, run again")
    status = json.loads(status_file.read_text())
    assert (status["state"], status["attempts"]) == ("done", 2), status
    records = [r for r in Ledger(spool).history(owner) if r.hold_id == entry]
    assert [r.kind for r in records] == ["hold", "settle"], records
    charged = _payment(spool, entry)["charged"]
    assert records[1].amount == charged and _available(spool, owner) == 5_000_000 - charged
    _audit_agrees(spool, [charged])


def test_the_executors_housekeeping_gives_back_a_dead_holders_funds_and_forgets_old_nonces(spool: Path) -> None:
    # A hold whose holder died (nobody settles or renews it) and a nonce from a signature far too
    # old to be accepted again: one round of the executors' maintenance job ends both.
    payer_key = keys.SigningKey.generate()
    ledger = Ledger(spool)
    ledger.deposit(payer_key.public, 1_000_000)
    ledger.hold(payer_key.public, "dead-holder", 600_000, ttl=0.05, holder="gone")
    nonces = NonceStore(spool, max_age=1)
    old = int(time.time()) - 3600
    nonces.use(payer_key.public, "n" * 20, old, old + 1)
    bucket = spool / "ledger" / "nonces"
    assert any(bucket.rglob("*")) and ledger.balance(payer_key.public).available == 400_000
    wait_until(lambda: time.time() > ledger.history(payer_key.public)[-1].expires, 5, "the hold's expiry")  # type: ignore[operator]
    Housekeeping(ledger, nonces)()
    assert ledger.balance(payer_key.public).available == 1_000_000
    assert [r.kind for r in ledger.history(payer_key.public)] == ["deposit", "hold", "release"]
    assert not [p for p in bucket.rglob("*") if p.is_file()]


def test_the_executors_housekeeping_prunes_the_indexes_of_holds_that_ended_long_ago(spool: Path) -> None:
    # ledger/holds/ grew without end: one index per invocation ever held. Indexes of holds that
    # ended (settled, released, expired) more than hold_ttl ago go; a live hold's stays, whatever
    # its age, and can still be settled; the journal (and so `ledger audit`) is untouched.
    account = keys.SigningKey.generate().public
    ledger = Ledger(spool)
    ledger.deposit(account, 1_000_000)
    for hold_id in ("settled", "released", "live", "recent"):
        ledger.hold(account, hold_id, 100_000, ttl=3600, holder="me")
    ledger.settle("settled", 40_000)
    ledger.release("released", reason="the system failed it")
    ledger.settle("recent", 10_000)
    holds = spool / "ledger" / "holds"
    long_ago = time.time() - 7200
    for hold_id in ("settled", "released", "live"):
        os.utime(holds / f"{hold_id}.json", (long_ago, long_ago))
    (holds / "stray.txt").write_text("not an index")  # left for `ledger audit` to report
    os.utime(holds / "stray.txt", (long_ago, long_ago))
    history = ledger.history(account)

    Housekeeping(ledger, NonceStore(spool, max_age=1), hold_ttl=3600)()
    assert sorted(os.listdir(holds)) == ["live.json", "recent.json", "stray.txt"]
    assert ledger.history(account) == history
    assert ledger.settle("live", 30_000).amount == 30_000
    assert ledger.balance(account).available == 1_000_000 - 40_000 - 10_000 - 30_000
    (holds / "stray.txt").unlink()
    assert ledger.audit().ok


@pytest.mark.slow
def test_a_warm_server_request_through_the_gateway_is_charged_like_any_other(
    spool: Path,
    tmp_path: Path,
    server_key: Path,  # noqa: F811
    executors: Any,
    gateways: Any,  # noqa: F811
) -> None:
    _config(spool)
    executors(spool, "--server-key", str(server_key))
    cid = deploy(spool, tmp_path / "warm", _server("paid-warm"), {"app.py": APP})
    assert built(spool, cid).state == DeploymentState.READY
    payer_key = keys.SigningKey.generate()
    _deposit(spool, payer_key.public, "3")
    gateway = gateways(spool, "--no-direct")  # the spool path (test_direct.py: the direct one)
    charges = []
    for n in (1, 2):  # the cold start, then the warm instance
        body = f"request {n}".encode()
        status, answer, data = gateway.request("POST", f"/{cid}/w", body, _signed(payer_key, cid, "/w", body))
        assert status == 200 and f" {n} POST /w " in data.decode(), data
        entry = spool / "invocations" / "done" / answer["X-Request-Id"] / "result"
        warm = json.loads((entry / "warm.json").read_text())
        paid = _payment(spool, answer["X-Request-Id"])
        assert paid["payer"] == payer_key.public and paid["charged"] == cost_of(FEE, RATE, warm["wall_time"]), paid
        charges.append(paid["charged"])
    assert _available(spool, payer_key.public) == 3_000_000 - sum(charges)
    _audit_agrees(spool, charges)
