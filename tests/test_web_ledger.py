"""The status page's Ledger section and each deployment's invocations with who paid and what was
charged: accounts made and charged through the real `Ledger` API, `cutor-spool status-page`
regenerates the page, and the balances and charges are read from the HTML (and in Chromium when
it is there), from status.json and metrics.prom. A ledger directory with junk in it (a name that is
no account, an edited record) shows the rest and says which account cannot be read."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from cdp import CHROMIUM, Browser
from test_invoke import deploy, server_key  # noqa: F401 (server_key: the fixture)
from test_web_deployments import SCREENS, regenerate
from test_web_page import Node, by_attr, by_tag

from cutor_spool.deployments import keys
from cutor_spool.documents.deployment import InvocationRequest, Response
from cutor_spool.documents.states import Outcome, State
from cutor_spool.documents.status import StageSummary, StatusDocument
from cutor_spool.ledger import Ledger
from cutor_spool.ledger.journal import Journal

CREDIT = 1_000_000


def cells(node: Node) -> list[str]:
    return [" ".join(td.text().split()) for td in node.find_all(by_tag("td"))]


def account_row(page: Node, account: str) -> list[str]:
    return cells(page.find(by_attr("data-account", account)))


def finished_invocation(
    spool: Path, cid: str, entry: str, *, http: int, wall: float, payment: dict[str, Any] | None
) -> None:
    """An entry of invocations/done/ with the files an executor leaves there (request.json,
    result/status.json, response.json, payment.json), written directly: the executor's own writing
    of them is tested in tests/test_payments.py; here the page reading them is under test."""
    result = spool / "invocations" / "done" / entry / "result"
    result.mkdir(parents=True)
    (result.parent / "request.json").write_text(json.dumps(InvocationRequest(deployment=cid).dump()))
    stage = StageSummary(status="ok", exit_code=0, cpu_time=0.01, wall_time=wall, memory=1 << 20)
    at = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    status = StatusDocument(
        id=entry, state=State.DONE, outcome=Outcome.OK, states={"done": at}, stages={"run": stage}, updated_at=at
    )
    (result / "status.json").write_text(json.dumps(status.dump()))
    (result / "response.json").write_text(json.dumps(Response(status=http, body="secret answer").dump()))
    if payment is not None:
        (result / "payment.json").write_text(json.dumps(payment))


def test_the_page_shows_balances_recent_charges_and_who_paid_each_invocation(
    spool: Path,
    tmp_path: Path,
    server_key: Path,  # noqa: F811 (the fixture imported above)
) -> None:
    app = deploy(spool, tmp_path / "app", {"run": "true"})
    ledger = Ledger(spool)
    payer, other = keys.SigningKey.generate().public, keys.SigningKey.generate().public
    ledger.deposit(payer, 10 * CREDIT, note="invoice 17 for a private customer")
    ledger.deposit(other, 3 * CREDIT)
    ledger.hold(payer, "call-paid", 2 * CREDIT, ttl=60, holder="w1")
    charge = ledger.settle("call-paid", 1_250_000)
    ledger.hold(payer, "call-failed", 2 * CREDIT, ttl=60, holder="w1")
    ledger.release("call-failed", reason="the system gave up")
    ledger.hold(payer, "call-live", 500_000, ttl=600, holder="w1")
    ledger.hold(other, "call-dead", 1 * CREDIT, ttl=0.01, holder="w2")
    time.sleep(0.02)  # the hold's expiry passes (a clock, not a wait on work)
    assert ledger.expire() == ["call-dead"]
    finished_invocation(
        spool,
        app,
        "call-paid",
        http=201,
        wall=0.25,
        payment={"payer": payer, "held": 2 * CREDIT, "charged": charge.amount, "kind": "settle"},
    )
    finished_invocation(spool, app, "call-free", http=500, wall=1.5, payment=None)
    # A hold that expired before its settlement: nothing charged, the executor says "release".
    finished_invocation(
        spool,
        app,
        "call-dead",
        http=200,
        wall=0.5,
        payment={"payer": other, "held": 1 * CREDIT, "charged": 0, "kind": "release"},
    )

    page, status = regenerate(spool)

    # Balances, in credits: 10 deposited, 1.25 charged, 0.5 held by the live hold.
    assert account_row(page, payer)[1:] == ["10.000000", "1.250000", "0.500000", "8.250000", "6"]
    assert account_row(page, other)[1:] == ["3.000000", "0.000000", "0.000000", "3.000000", "3"]
    first = page.find(by_attr("data-account", payer)).find(by_tag("td"))
    assert first.attrs["title"] == payer and first.text() == f"{payer[:14]}…{payer[-4:]}"
    # Recent charges, newest first: the expiry, the release, the settlement (linked to its invocation).
    charges = page.find(by_attr("data-section", "ledger"))
    rows = [cells(tr) for tr in charges.find_all(by_attr("data-hold"))]
    assert [r[2] for r in rows] == ["call-dead", "call-failed", "call-paid"]
    assert [(r[3], r[4], r[5]) for r in rows] == [
        ("0.000000", "1.000000", "expired"),
        ("0.000000", "2.000000", "release"),
        ("1.250000", "2.000000", "settled"),
    ]
    link = page.find(by_attr("data-hold", "call-paid")).find(by_tag("a"))
    assert link.attrs["href"] == "#inv-call-paid"
    assert page.find(by_attr("id", "inv-call-paid")).attrs["data-invocation"] == "call-paid"
    assert page.find(by_attr("data-hold", "call-failed")).find_all(by_tag("a")) == []  # not on the page
    assert page.find(by_attr("data-hold", "call-dead")).find(by_tag("a")).attrs["href"] == "#inv-call-dead"

    # The deployment's invocations: state, HTTP status, run time, payer, charged, held.
    paid, free = cells(page.find(by_attr("id", "inv-call-paid"))), cells(page.find(by_attr("id", "inv-call-free")))
    assert paid[:4] == ["call-paid", "ok", "201", "0.250 s"]
    assert paid[4] == f"{payer[:14]}…{payer[-4:]}" and paid[5:7] == ["1.250000", "2.000000"]
    assert cells(page.find(by_attr("id", "inv-call-dead")))[5] == "0.000000 released"
    assert free[:4] == ["call-free", "ok", "500", "1.500 s"] and free[4:7] == ["\N{EN DASH}"] * 3

    books = status["ledger"]
    assert books["totals"] == {
        "accounts": 2,
        "unreadable": 0,
        "deposited": 13 * CREDIT,
        "charged": 1_250_000,
        "held": 500_000,
        "available": 11_250_000,
    }
    listed = {d["cid"]: d for d in status["deployments"]}[app]["recent"]
    assert {i["name"]: (i["payer"], i["charged"], i["held"]) for i in listed} == {
        "call-paid": (payer, 1_250_000, 2 * CREDIT),
        "call-free": (None, None, None),
        "call-dead": (other, 0, 1 * CREDIT),
    }
    prom = (spool / "status" / "metrics.prom").read_text()
    assert 'cutor_spool_ledger_accounts{readable="true"} 2' in prom
    assert 'cutor_spool_ledger_credits{total="charged"} 1.25' in prom
    assert 'cutor_spool_ledger_credits{total="held"} 0.5' in prom
    # Never a deposit's note, a holder, or a response's body.
    html = (spool / "status" / "index.html").read_text()
    for needle in ("invoice 17", "secret answer", '"w1"'):
        assert needle not in html and needle not in json.dumps(status)

    # A new charge shows at the next regeneration (the page reads only the records after its last).
    ledger.hold(payer, "call-next", CREDIT, ttl=60, holder="w1")
    ledger.settle("call-next", 300_000)
    page, status = regenerate(spool)
    assert account_row(page, payer)[1:] == ["10.000000", "1.550000", "0.500000", "7.950000", "8"]
    assert cells(page.find(by_attr("data-hold", "call-next")))[3] == "0.300000"

    if CHROMIUM is not None:
        with Browser(tmp_path / "profile", height=700) as browser:
            browser.open((spool / "status" / "index.html").as_uri())
            row = "document.getElementById('inv-call-paid')"
            assert browser.eval(f"{row}.checkVisibility()") is False  # folded away in its <details>
            text = browser.eval(f"document.querySelector('[data-account=\"{payer}\"]').innerText")
            # Following the charge's link shows the invocation's row: its <details> opens.
            browser.eval("document.querySelector('[data-hold=\"call-paid\"] a').click()")
            browser.wait(f"{row}.checkVisibility() && location.hash === '#inv-call-paid'")
            shot = browser.screenshot(tmp_path / "ledger.png")
        assert text.split("\t")[1:] == ["10.000000", "1.550000", "0.500000", "7.950000", "8"]
        if SCREENS.is_dir():
            (SCREENS / "ledger.png").write_bytes(shot.read_bytes())


def test_junk_in_the_ledger_shows_the_rest_and_says_which_account_cannot_be_read(spool: Path) -> None:
    ledger = Ledger(spool)
    good, edited = keys.SigningKey.generate().public, keys.SigningKey.generate().public
    ledger.deposit(good, 5 * CREDIT)
    ledger.deposit(edited, 1 * CREDIT)
    ledger.deposit(edited, 2 * CREDIT)
    (spool / "ledger" / "accounts" / "not-an-account").mkdir()
    # An edited record: the second deposit made larger by hand.
    path = Journal(spool / "ledger", edited).path(2)
    record = json.loads(path.read_text())
    record["amount"] = 900 * CREDIT
    path.write_text(json.dumps(record))

    page, status = regenerate(spool)

    assert account_row(page, good)[1:] == ["5.000000", "0.000000", "0.000000", "5.000000", "1"]
    assert "cannot be read" in account_row(page, edited)[1]
    assert "cannot be read" in account_row(page, "not-an-account")[1]
    assert "not an account" in account_row(page, "not-an-account")[1]
    totals = status["ledger"]["totals"]
    assert (totals["accounts"], totals["unreadable"], totals["deposited"]) == (3, 2, 5 * CREDIT)
    # Again from the page's cache, and after --full: the same.
    for args in ((), ("--full",)):
        page, status = regenerate(spool, *args)
        assert "cannot be read" in account_row(page, edited)[1]
        assert status["ledger"]["totals"]["unreadable"] == 2


def test_a_spool_without_a_ledger_account_says_so(spool: Path) -> None:
    page, status = regenerate(spool)
    assert "The ledger has no account." in page.find(by_attr("data-section", "ledger")).text()
    assert status["ledger"]["accounts"] == [] and status["ledger"]["charges"] == []


def test_the_page_reads_only_new_records_until_full(spool: Path) -> None:
    """A record edited below the head after the page read it is not read again (the page reads
    what was added, as `ledger balance` does); `--full` reads every account again and says so."""
    ledger = Ledger(spool)
    account = keys.SigningKey.generate().public
    ledger.deposit(account, 2 * CREDIT)
    ledger.deposit(account, 3 * CREDIT)
    page, _ = regenerate(spool)
    assert account_row(page, account)[1:] == ["5.000000", "0.000000", "0.000000", "5.000000", "2"]
    path = Journal(spool / "ledger", account).path(1)
    record = json.loads(path.read_text())
    record["amount"] = 700 * CREDIT
    path.write_text(json.dumps(record))
    ledger.deposit(account, 1 * CREDIT)  # this process's journal state is from before the edit
    page, _ = regenerate(spool)
    assert account_row(page, account)[1:] == ["6.000000", "0.000000", "0.000000", "6.000000", "3"]
    page, status = regenerate(spool, "--full")
    assert "cannot be read" in account_row(page, account)[1]
    assert status["ledger"]["totals"]["unreadable"] == 1
