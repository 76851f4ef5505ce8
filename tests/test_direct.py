"""The direct path (runner/invocations/direct.py, blocks.py; gateway/direct.py): a warm
deployment's request goes from a gateway straight to the door of an executor on the same host,
with no spool entry, and is charged in blocks. Through a real uvicorn gateway, real executors and
bubblewrap: the right account charged by the exact amount, one journal record per block whose
items are the requests; 402 with nothing run; a replayed signature refused; the door's socket
refused to a user who is not root; the spool path when the door is gone. The accounting alone,
in processes of their own as two executors would be: never below zero, and a worker SIGKILLed
mid-block leaves at most one charge per request."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, wait_until, write_config
from test_gateway import gateways  # noqa: F401 (the fixture)
from test_invoke import built, deploy, server_key  # noqa: F401 (server_key: the fixture)
from test_payments import _audit_agrees, _deposit, _signed
from test_warm import APP, _server

from cutor_spool.deployments import keys
from cutor_spool.deployments.spec import load_deployment
from cutor_spool.deployments.store import Store
from cutor_spool.documents.deployment import DeploymentState
from cutor_spool.ledger import Ledger, Record

FEE = 100_000  # the rate is 0 here: every request costs exactly the fee, so amounts are exact


def _direct_config(spool: Path) -> None:
    write_config(spool, deployments={"fee": FEE, "rate": 0, "invoke_wall_time": "2s", "hold_margin": "1s"})


def _settles(spool: Path, account: str) -> list[Record]:
    return [r for r in Ledger(spool).history(account) if r.kind == "settle"]


def _settled(spool: Path, account: str) -> None:
    wait_until(lambda: Ledger(spool).balance(account).held == 0, 30, f"the blocks of {account} settled")


def _count(data: bytes) -> int:
    return int(data.split()[1])  # APP's answer: "<instance token> <its request count> ..."


def _expired(spool: Path, account: str) -> bool:
    """Every hold of the account has ended (expire() releases those past their time)."""
    ledger = Ledger(spool)
    ledger.expire()
    return ledger.balance(account).held == 0


def _uid(data: bytes) -> str:
    return data.decode().rsplit("uid=", 1)[1]


def _door(spool: Path) -> str:
    doors = spool / "invocations" / "doors"
    found = wait_until(lambda: os.listdir(doors) if doors.is_dir() else [], 30, "a door published")
    return str(json.loads((doors / found[0]).read_text())["socket"])


@pytest.mark.slow
def test_direct_requests_charge_the_right_account_exactly_in_one_record_per_block(
    spool: Path,
    tmp_path: Path,
    server_key: Path,  # noqa: F811
    executors: Any,
    gateways: Any,  # noqa: F811
) -> None:
    _direct_config(spool)
    executor = executors(spool, "--server-key", str(server_key))
    cid = deploy(spool, tmp_path / "warm", _server("direct"), {"app.py": APP})
    assert built(spool, cid).state == DeploymentState.READY
    owner = load_deployment(Store(spool), cid).spec.owner
    _deposit(spool, owner, "10")
    gateway = gateways(spool)
    done = spool / "invocations" / "done"

    # The first request starts the instance: the spool path (an entry in done/).
    status, answer, data = gateway.request("POST", f"/{cid}/cold", b"")
    assert status == 200 and (done / answer["X-Request-Id"]).is_dir()
    first = _count(data)
    _settled(spool, owner)
    spool_charges = sum(r.amount for r in _settles(spool, owner))

    # Then the live instance answers directly: no entry; the owner pays for an unsigned request.
    ids = []
    for n in range(5):
        status, answer, data = gateway.request("POST", f"/{cid}/u{n}", f"body {n}".encode())
        assert status == 200 and _count(data) == first + 1 + n and data.decode().endswith(f"body {n} uid={_uid(data)}")
        assert f"POST /u{n} " in data.decode() and not (done / answer["X-Request-Id"]).exists()
        ids.append(answer["X-Request-Id"])

    # A payer's signature: its account pays; the same signature again is a replay, 401, not run.
    payer = keys.SigningKey.generate()
    _deposit(spool, payer.public, "0.2")  # two requests' worth
    signed = []
    for n in range(2):
        body = f"signed {n}".encode()
        headers = _signed(payer, cid, f"/s{n}", body)
        status, answer, data = gateway.request("POST", f"/{cid}/s{n}", body, headers)
        assert status == 200 and _count(data) == first + 6 + n, data
        signed.append(answer["X-Request-Id"])
        if n == 0:
            status, _, refused = gateway.request("POST", f"/{cid}/s{n}", body, headers)
            assert status == 401 and "paid for another request" in json.loads(refused)["error"], refused
    # Its funds are spent: 402, and the program does not run.
    body = b"signed 2"
    status, _, refused = gateway.request("POST", f"/{cid}/s2", body, _signed(payer, cid, "/s2", body))
    assert status == 402 and "insufficient funds" in json.loads(refused)["error"]
    status, _, data = gateway.request("POST", f"/{cid}/after", b"")
    assert status == 200 and _count(data) == first + 8  # nothing ran for the 401 and the 402

    _settled(spool, owner)
    _settled(spool, payer.public)
    metrics = gateway.request("GET", "/metrics")[2].decode()
    assert 'cutor_gateway_direct_total{outcome="answered"} 10' in metrics  # 5 + 2 + 401 + 402 + 1
    assert 'cutor_gateway_direct_total{outcome="spool"} 1' in metrics  # the cold start
    owner_items = [item for r in _settles(spool, owner) if r.items for item in r.items]
    payer_items = [item for r in _settles(spool, payer.public) if r.items for item in r.items]
    assert [i for i, _ in payer_items] == signed and all(cost == FEE for _, cost in payer_items)
    assert [i for i, _ in owner_items][:5] == ids and all(cost == FEE for _, cost in owner_items)
    assert len(owner_items) == 6  # the five and the last one
    assert Ledger(spool).balance(payer.public).available == 0
    assert Ledger(spool).balance(owner).available == 10_000_000 - spool_charges - 6 * FEE
    _audit_agrees(spool, [spool_charges, *(FEE for _ in owner_items), *(FEE for _ in payer_items)])

    # The door's socket: root's and private; a user who is not root cannot connect.
    address = _door(spool)
    probe = "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])"
    refused_run = subprocess.run(
        ["/usr/bin/python3", "-c", probe, address], user=65534, group=65534, capture_output=True, text=True, check=False
    )
    assert refused_run.returncode != 0 and "PermissionError" in refused_run.stderr, refused_run.stderr

    # The executor is gone (SIGKILL: its door's record and socket stay behind): the spool path.
    executor.signal(signal.SIGKILL)
    assert executor.proc is not None and executor.proc.wait(30) == -signal.SIGKILL
    second = executors(spool, "--server-key", str(server_key))
    status, answer, data = gateway.request("POST", f"/{cid}/again", b"")
    assert status == 200 and (done / answer["X-Request-Id"]).is_dir(), data  # a new instance, via the spool
    assert len(os.listdir(spool / "invocations" / "doors")) == 1  # the dead one's record removed

    # That executor is SIGKILLed right after direct requests, its block maybe not settled yet: the
    # block's hold expires (5 s + the wall time + hold_margin), and no request is charged twice.
    def direct() -> bool:
        return not (done / gateway.request("POST", f"/{cid}/probe", b"")[1]["X-Request-Id"]).exists()

    wait_until(direct, 30, "the new executor's door in use")
    before = Ledger(spool).balance(owner)
    late = [gateway.request("POST", f"/{cid}/late{n}", b"")[1]["X-Request-Id"] for n in range(3)]
    assert not any((done / entry).exists() for entry in late)
    second.signal(signal.SIGKILL)
    assert second.proc is not None and second.proc.wait(30) == -signal.SIGKILL
    wait_until(lambda: _expired(spool, owner), 30, "the blocks' expiry")
    after = Ledger(spool).balance(owner)
    charged = [i for r in _settles(spool, owner) if r.items for i, _ in r.items]
    assert after.held == 0 and all(charged.count(entry) <= 1 for entry in charged), charged
    assert after.charged - before.charged in [FEE * n for n in range(len(late) + 2)]  # (+ the last probe)
    _audit_agrees(spool, [r.amount for a in (owner, payer.public) for r in _settles(spool, a)])


BOOK = """
import os, signal, sys, time
from pathlib import Path
from cutor_spool.ledger import InsufficientFunds, Ledger
from cutor_spool.runner.invocations.blocks import BlockBook
spool, account, name, count, kill = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "kill"
book = BlockBook(Ledger(spool), name, margin=0.2, size=4, life=1, idle=60)
ran = 0
for n in range(count):
    try:
        block = book.reserve(account, 1000, 0.1)
    except InsufficientFunds:
        continue
    book.spend(block, 1000, f"{name}-{n}", 700)
    book.sweep()  # the door's sweeper: the next block placed ahead, the ended ones settled
    ran += 1
    print(f"{name}-{n}", flush=True)
if kill:
    os.kill(os.getpid(), signal.SIGKILL)
book.sweep(everything=True)
"""


def _book(spool: Path, account: str, name: str, count: int, kill: bool = False) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-c", BOOK, str(spool), account, name, str(count), "kill" if kill else "-"]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True)


def test_two_executors_blocks_never_take_an_account_below_zero(spool: Path) -> None:
    account = keys.SigningKey.generate().public
    ledger = Ledger(spool)
    ledger.deposit(account, 50_000)  # 50 worst cases of 1000
    books = [_book(spool, account, name, 60) for name in ("a", "b")]
    ran = [line.strip() for proc in books for line in proc.communicate(timeout=120)[0].splitlines()]
    assert all(proc.returncode == 0 for proc in books)
    records = ledger.history(account)
    assert all(r.after.available >= 0 for r in records)
    items = [item for r in records if r.kind == "settle" and r.items for item in r.items]
    assert sorted(i for i, _ in items) == sorted(ran) and len(ran) <= 50_000 // 700
    assert ledger.balance(account).held == 0
    assert ledger.balance(account).available == 50_000 - 700 * len(ran) >= 0
    assert ledger.audit().ok


def test_a_worker_killed_mid_block_leaves_at_most_one_charge_per_request(spool: Path) -> None:
    account = keys.SigningKey.generate().public
    ledger = Ledger(spool)
    ledger.deposit(account, 100_000)
    proc = _book(spool, account, "k", 6, kill=True)  # a block of 4 settled, then 2 in a block it dies with
    ran = proc.communicate(timeout=60)[0].split()
    assert proc.returncode == -signal.SIGKILL and len(ran) == 6
    # The dead worker's open block and the next one it had placed ahead: held, not charged.
    assert ledger.balance(account).held == 8000
    wait_until(lambda: _expired(spool, account), 10, "the dead worker's blocks expired")
    items = [item for r in ledger.history(account) if r.kind == "settle" and r.items for item in r.items]
    assert [i for i, _ in items] == ran[:4]  # each at most once; the last two uncharged (our fault)
    assert ledger.balance(account).available == 100_000 - 4 * 700 and ledger.balance(account).held == 0
    assert ledger.audit().ok
