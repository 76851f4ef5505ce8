"""The escrow ledger (docs/ledger.md): exact balances through deposits, holds, settlements and
releases; many processes racing for one account never overdraw it; a dead holder's hold expires;
a retry charges nothing more; a writer killed between any two steps leaves books that audit clean
and charge nothing twice; bad input on the command line writes nothing; an edited record is found."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import CLI, ROOT, wait_until

from cutor_spool.cli import cli
from cutor_spool.config import SpoolConfig
from cutor_spool.config_template import DEFAULT_CONFIG_TEXT
from cutor_spool.deployments import keys
from cutor_spool.ledger import (
    AlreadySettled,
    InsufficientFunds,
    Ledger,
    LedgerError,
    UnknownHold,
    cost_of,
    format_amount,
    parse_account,
    parse_amount,
)
from cutor_spool.ledger.journal import CHECKPOINT_EVERY, Journal, encode
from cutor_spool.yamlload import load_yaml


def new_account() -> str:
    return keys.SigningKey.generate().public


def journal_files(spool: Path) -> list[Path]:
    return sorted((spool / "ledger" / "accounts").rglob("journal/*/*.json"))


def audit_cli(spool: Path) -> tuple[int, dict[str, Any], str]:
    done = subprocess.run([*CLI, "--spool", str(spool), "ledger", "audit", "--json"], capture_output=True, text=True)
    return done.returncode, json.loads(done.stdout), done.stderr


def test_round_trip_with_exact_numbers(spool: Path) -> None:
    ledger, payer = Ledger(spool), new_account()
    assert ledger.balance(payer).available == 0
    ledger.deposit(payer, 1_000_000, note="first")
    ledger.deposit(payer, 500_000)
    a = ledger.hold(payer, "inv-a", 300_000, ttl=60, holder="host1:1")
    b = ledger.hold(payer, "inv-b", 400_000, ttl=60, holder="host1:2")
    assert (a.amount, a.account, a.seq, b.seq) == (300_000, payer, 3, 4)
    bal = ledger.balance(payer)
    assert (bal.deposited, bal.charged, bal.held, bal.available) == (1_500_000, 0, 700_000, 800_000)

    assert ledger.settled("inv-a") is None
    charged = ledger.settle("inv-a", 123_457, note="1.2s")
    assert (charged.kind, charged.amount, charged.held) == ("settle", 123_457, 300_000)
    over = ledger.settle("inv-b", 999_999_999)  # charges at most what was held
    assert over.amount == 400_000
    c = ledger.hold(payer, "inv-c", 250_000, ttl=60, holder="h")
    released = ledger.release("inv-c", reason="sandbox broke")
    assert (released.kind, released.amount, released.reason) == ("release", 0, "sandbox broke")
    assert ledger.settled("inv-a") == charged and ledger.settled("inv-c") == released and c.seq == 7

    bal = ledger.balance(payer)
    assert (bal.deposited, bal.charged, bal.held, bal.available) == (1_500_000, 523_457, 0, 976_543)
    history = ledger.history(payer)
    assert [r.kind for r in history] == ["deposit", "deposit", "hold", "hold", "settle", "settle", "hold", "release"]
    assert [r.after.available for r in history] == [
        1_000_000, 1_500_000, 1_200_000, 800_000, 976_543, 976_543, 726_543, 976_543,
    ]  # fmt: skip
    assert [r.seq for r in ledger.history(payer, limit=2)] == [7, 8]
    with pytest.raises(InsufficientFunds) as refused:
        ledger.hold(payer, "inv-d", 976_544, ttl=60, holder="h")
    assert (refused.value.available, refused.value.needed) == (976_543, 976_544)
    assert len(ledger.history(payer)) == 8 and not (spool / "ledger" / "holds" / "inv-d.json").exists()
    ledger.hold(payer, "inv-d", 976_543, ttl=60, holder="h")  # to the last unit
    assert ledger.balance(payer).available == 0
    zero = ledger.hold(new_account(), "free", 0, ttl=60, holder="h")  # a free spool: holds of 0, no deposit
    assert ledger.settle("free", 0).amount == 0 and zero.amount == 0
    report = ledger.audit()
    assert report.ok, report.problems
    assert report.charged == 523_457 and report.accounts[payer].available == 0


def _racer(spool: str, account: str, worker: int, amount: int, barrier: Any, out: Any) -> None:
    ledger = Ledger(Path(spool))
    barrier.wait()
    won: list[str] = []
    try:
        for i in range(250):
            hold_id = f"w{worker}-{i}"
            try:
                ledger.hold(account, hold_id, amount, ttl=600, holder=f"racer{worker}")
                won.append(hold_id)
            except InsufficientFunds:
                pass
    except Exception as exc:  # reported, so that the test fails at once with it
        out.put(f"racer {worker}: {exc!r}")
        return
    out.put(won)


@pytest.mark.slow
def test_eight_processes_never_overdraw_one_account(spool: Path) -> None:
    ledger, payer, amount = Ledger(spool), new_account(), 7
    funds = amount * 1_234 + 5  # fewer than 2,000 holds' worth, and not a multiple
    ledger.deposit(payer, funds)
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(8), ctx.Queue()
    racers = [ctx.Process(target=_racer, args=(str(spool), payer, w, amount, barrier, out)) for w in range(8)]
    for racer in racers:
        racer.start()
    results = [out.get(timeout=240) for _ in racers]
    assert [r for r in results if isinstance(r, str)] == []
    won = [hold_id for result in results for hold_id in result]
    for racer in racers:
        racer.join(timeout=60)
        assert racer.exitcode == 0
    assert len(won) == len(set(won)) == funds // amount
    history = ledger.history(payer)
    assert min(r.after.available for r in history) >= 0
    assert [r.seq for r in history] == list(range(1, len(history) + 1))
    assert ledger.balance(payer).available == funds % amount

    expected = 0
    for n, hold_id in enumerate(won):
        cost = n % (amount + 3)  # some above the hold: charged only what was held
        expected += ledger.settle(hold_id, cost).amount
    assert expected == sum(min(n % (amount + 3), amount) for n in range(len(won)))
    code, report, _ = audit_cli(spool)
    assert code == 0 and report["ok"] and report["problems"] == []
    assert report["charged"] == expected
    assert report["accounts"][payer]["charged"] == expected
    assert report["accounts"][payer]["available"] == funds - expected
    assert list((spool / "ledger" / "accounts" / payer / "checkpoints").iterdir())  # reads did not fold it all


HOLDER = """
import sys, time
from pathlib import Path
from cutor_spool.ledger import Ledger
Ledger(Path(sys.argv[1])).hold(sys.argv[2], "dying", 400, ttl=30, holder="doomed")
print("held", flush=True)
time.sleep(600)
"""


def test_a_dead_holders_hold_expires_and_is_not_charged(spool: Path) -> None:
    ledger, payer = Ledger(spool), new_account()
    ledger.deposit(payer, 1_000)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(spool), payer], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    placed = time.time()
    assert ledger.balance(payer).available == 600
    assert ledger.expire(now=placed + 5) == []  # not yet: its ttl is 30 s
    assert ledger.balance(payer).held == 400
    assert ledger.expire(now=placed + 31) == ["dying"]
    assert ledger.expire(now=placed + 31) == []
    bal = ledger.balance(payer)
    assert (bal.held, bal.charged, bal.available) == (0, 0, 1_000)
    late = ledger.settle("dying", 400)  # the holder came back too late: nothing is charged
    assert (late.kind, late.reason, late.amount) == ("release", "expired", 0)
    with pytest.raises(UnknownHold):
        ledger.renew("dying", 30)
    assert ledger.balance(payer).charged == 0 and ledger.audit().ok


def test_renewal_keeps_a_live_holders_hold(spool: Path) -> None:
    ledger, payer = Ledger(spool), new_account()
    ledger.deposit(payer, 100)
    hold = ledger.hold(payer, "long", 100, ttl=10, holder="h")
    ledger.renew("long", 100)
    assert ledger.expire(now=hold.expires + 1) == []
    assert ledger.expire(now=time.time() + 101) == ["long"]


def test_a_full_account_gets_an_expired_holds_funds_back(spool: Path) -> None:
    ledger, payer = Ledger(spool), new_account()
    ledger.deposit(payer, 100)
    old = ledger.hold(payer, "old", 100, ttl=0.01, holder="dead")
    wait_until(lambda: time.time() > old.expires, 5, "the hold's expiry")  # hold() reads the real clock
    ledger.hold(payer, "new", 100, ttl=60, holder="alive")
    assert ledger.settled("old") is not None and ledger.settled("old").reason == "expired"  # type: ignore[union-attr]


def test_idempotency_one_hold_one_charge(spool: Path) -> None:
    ledger, payer = Ledger(spool), new_account()
    ledger.deposit(payer, 1_000)
    first = ledger.hold(payer, "req-1", 300, ttl=60, holder="a")
    again = ledger.hold(payer, "req-1", 300, ttl=60, holder="b")  # a retry
    assert again.seq == first.seq and ledger.balance(payer).held == 300
    settled = ledger.settle("req-1", 250)
    assert ledger.settle("req-1", 250) == settled
    assert ledger.release("req-1", reason="late") == settled
    with pytest.raises(AlreadySettled) as retry:
        ledger.hold(payer, "req-1", 300, ttl=60, holder="c")
    assert retry.value.record == settled
    assert ledger.balance(payer).charged == 250 and len(ledger.history(payer)) == 3
    # Released (the system's fault): a retry of the request may be held, and charged, again.
    ledger.hold(payer, "req-2", 100, ttl=60, holder="a")
    ledger.release("req-2", reason="host died")
    ledger.hold(payer, "req-2", 100, ttl=60, holder="b")
    ledger.settle("req-2", 60)
    assert ledger.balance(payer).charged == 310
    with pytest.raises(LedgerError):
        ledger.hold(new_account(), "req-2", 1, ttl=60, holder="x")  # another account's id
    with pytest.raises(UnknownHold):
        ledger.settle("never", 1)
    for bad_id in ("", "../x", ".hidden", "a/b", "x" * 129):
        with pytest.raises(LedgerError):
            ledger.hold(payer, bad_id, 1, ttl=60, holder="x")
    assert ledger.audit().ok


# -- crash recovery. Each test leaves what a writer killed at one step leaves, by calling the
# internal steps up to that point (a fake fault: a real kill could not be placed between two
# system calls reliably), then checks that the next writer, `expire` or `audit` recovers.


def test_killed_after_the_index_before_the_record(spool: Path) -> None:
    ledger, payer = Ledger(spool), new_account()
    ledger.deposit(payer, 100)
    ledger._ready()
    journal = ledger.journal(payer)
    index, made = ledger._claim_index(journal, "half", 60, 30, "dead")  # step 1 of hold(); then killed
    assert made and ledger.balance(payer).held == 0 and ledger.settled("half") is None
    with pytest.raises(UnknownHold):
        ledger.settle("half", 10)
    assert ledger.audit().ok
    ledger.expire(now=index.expires + 1)  # the sweep removes the index of a hold never written
    assert not (spool / "ledger" / "holds" / "half.json").exists()
    ledger._claim_index(journal, "retry", 60, 30, "dead")
    assert ledger.hold(payer, "retry", 60, ttl=30, holder="alive").amount == 60  # a retry takes it over
    assert ledger.balance(payer).held == 60 and ledger.audit().ok


def test_killed_after_the_record_before_the_index(spool: Path) -> None:
    ledger, payer = Ledger(spool), new_account()
    ledger.deposit(payer, 100)
    ledger._ready()
    journal = ledger.journal(payer)
    index, _ = ledger._claim_index(journal, "placed", 60, 30, "dead")
    record = ledger._place(journal, index, 60, 30, "dead")  # the hold is in the journal; then killed
    assert ledger._index("placed").seq is None  # type: ignore[union-attr]
    assert ledger.hold(payer, "placed", 60, ttl=30, holder="retry").seq == record.seq  # no second hold
    ledger._write_index(index)  # back to the index the dead writer left
    ledger.renew("placed", 30)
    settled = ledger.settle("placed", 45)
    assert ledger.settle("placed", 45) == settled and ledger.balance(payer).charged == 45
    assert ledger.audit().ok


def test_killed_after_the_settlement_before_the_index(spool: Path) -> None:
    ledger, payer = Ledger(spool), new_account()
    ledger.deposit(payer, 100)
    ledger.hold(payer, "s", 60, ttl=30, holder="h")
    before = (spool / "ledger" / "holds" / "s.json").read_bytes()
    settled = ledger.settle("s", 50)
    (spool / "ledger" / "holds" / "s.json").write_bytes(before)  # the index without its `end`
    assert ledger.settled("s") == settled  # found in the journal
    assert ledger.settle("s", 50) == settled and ledger.balance(payer).charged == 50
    with pytest.raises(AlreadySettled):
        ledger.hold(payer, "s", 60, ttl=30, holder="h")
    assert ledger.audit().ok


def test_killed_before_or_after_the_link(spool: Path) -> None:
    ledger, payer = Ledger(spool), new_account()
    ledger.deposit(payer, 100)
    journal = ledger.journal(payer)
    unlinked = ledger.tmp / ".tmp-000000000002.json-dead"  # written and fsynced, never linked
    state = journal.load()
    draft, _ = journal._next(state, {"kind": "deposit", "amount": 5, "time": time.time()})
    unlinked.write_bytes(encode(draft))
    linked = ledger.tmp / ".tmp-000000000001.json-dead2"  # linked, its temporary name left behind
    os.link(journal.path(1), linked)
    ledger.deposit(payer, 7)  # the next writer takes record 2 as if nothing were there
    assert ledger.balance(payer).deposited == 107 and ledger.audit().ok
    old = time.time() - 7200
    for path in (unlinked, linked):
        os.utime(path, (old, old))
    ledger.expire()
    assert list(ledger.tmp.iterdir()) == []
    assert ledger.balance(payer).deposited == 107 and ledger.audit().ok


def test_checkpoints_match_the_journal_and_a_bad_one_is_skipped(spool: Path) -> None:
    ledger, payer = Ledger(spool), new_account()
    for _ in range(CHECKPOINT_EVERY + 10):
        ledger.deposit(payer, 3)
    journal = ledger.journal(payer)
    checkpoints = sorted(journal.checkpoints.iterdir())
    assert checkpoints, "a writer that folded past CHECKPOINT_EVERY records wrote one"
    assert journal.load().totals() == journal.load(checkpoints=False).totals()
    assert ledger.audit().ok
    data = json.loads(checkpoints[-1].read_text())
    data["deposited"] += 1_000  # a forged checkpoint: its state no longer matches the journal
    checkpoints[-1].write_text(json.dumps(data))
    report = ledger.audit()
    assert not report.ok and any("checkpoint" in p for p in report.problems)
    data["digest"] = "0" * 64  # one that does not name its record's digest is skipped by readers
    checkpoints[-1].write_text(json.dumps(data))
    assert ledger.balance(payer).deposited == 3 * (CHECKPOINT_EVERY + 10)


def test_a_tampered_record_is_found_by_audit(spool: Path) -> None:
    ledger, payer = Ledger(spool), new_account()
    ledger.deposit(payer, 1_000)
    ledger.hold(payer, "t", 500, ttl=60, holder="h")
    ledger.settle("t", 400)
    ledger.deposit(payer, 1)
    assert audit_cli(spool)[0] == 0
    settle = journal_files(spool)[2]
    original = settle.read_text()
    settle.write_text(original.replace('"amount":400', '"amount":40'))  # a smaller charge
    code, report, _ = audit_cli(spool)
    assert code == 1 and not report["ok"]
    assert any("record 3" in p and "adds up to" in p for p in report["problems"])
    # Forged consistently (its totals too): the next record's link to it breaks.
    record = json.loads(original)
    record["amount"], record["after"]["charged"], record["after"]["available"] = 40, 40, 960
    settle.write_text(encode(Journal(spool / "ledger", payer).parse(3, json.dumps(record).encode())).decode())
    code, report, _ = audit_cli(spool)
    assert code == 1 and any("record 4" in p and "prev" in p for p in report["problems"])
    human = subprocess.run([*CLI, "--spool", str(spool), "ledger", "audit"], capture_output=True, text=True)
    assert human.returncode == 1 and "problem: " in human.stderr and "FAILED" in human.stderr
    with pytest.raises(LedgerError):
        Ledger(spool).deposit(payer, 1)  # no writer (a new process's) builds on books that do not add up


def test_cli_round_trip_and_bad_input(spool: Path, tmp_path: Path) -> None:
    key = tmp_path / "payer.key"
    keys.write_signing_key(keys.SigningKey.generate(), key)
    payer = keys.public_of_file(key)
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(cli, ["--spool", str(spool), "ledger", *args])

    made = run("deposit", str(key), "2.5", "--note", "welcome")
    assert made.exit_code == 0, made.output
    assert f"{payer}: +2.500000" in made.output
    assert run("deposit", payer, "0.000001").exit_code == 0
    shown = run("balance", str(key), "--json")
    assert json.loads(shown.output) == {
        "account": payer, "deposited": 2_500_001, "charged": 0, "held": 0, "available": 2_500_001, "seq": 2,
    }  # fmt: skip
    assert "available              2.500001" in run("balance", payer).output
    listed = json.loads(run("history", payer, "--json", "--limit", "1").output)
    assert [r["amount"] for r in listed] == [1]
    assert "welcome" in run("history", payer).output
    before = sorted(p.relative_to(spool) for p in (spool / "ledger").rglob("*"))
    bad = [
        (["deposit", str(tmp_path / "missing.key"), "1"], "neither an account"),
        (["deposit", "ed25519:abc", "1"], "not an ed25519 public key"),
        (["deposit", payer, "--", "-1"], "not negative"),
        (["deposit", payer, "lots"], "is not an amount"),
        (["deposit", payer, "0"], "more than zero"),
        (["deposit", payer, "0.0000001"], "more than 6 decimals"),
        (["balance", "nobody"], "neither an account"),
    ]
    for args, message in bad:
        result = run(*args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    assert sorted(p.relative_to(spool) for p in (spool / "ledger").rglob("*")) == before
    assert run("audit").exit_code == 0


def test_units_accounts_and_prices(tmp_path: Path) -> None:
    assert cost_of(0, 0, 12.5) == 0
    assert cost_of(100, 1_000, 1.5) == 1_600
    assert cost_of(0, 3, 0.1) == 1  # 0.3 units, rounded up
    assert cost_of(0, 1_000_000, 0.1) == 100_000  # no float residue: 0.1 s is 100000 microseconds
    assert cost_of(5, 7, 0) == 5
    assert parse_amount("2") == 2_000_000 and parse_amount(" 0.25 ") == 250_000 and parse_amount("1e-6") == 1
    assert format_amount(2_500_001) == "2.500001" and format_amount(0) == "0.000000"
    for text in ("-1", "inf", "nan", "", "1,5", "0.0000001"):
        with pytest.raises(LedgerError):
            parse_amount(text)
    key = tmp_path / "k.key"
    keys.write_signing_key(keys.SigningKey.generate(), key)
    assert parse_account(str(key)) == keys.public_of_file(key) == parse_account(keys.public_of_file(key))
    config = SpoolConfig.model_validate(load_yaml(DEFAULT_CONFIG_TEXT))
    assert (config.deployments.fee, config.deployments.rate, config.deployments.hold_margin) == (0, 0, 30.0)
