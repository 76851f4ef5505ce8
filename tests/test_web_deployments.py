"""The status page's Deployments section: real executor processes build and invoke real deployments
(bubblewrap, sealed env), `cutor-spool status-page` regenerates the page, and the rows are read
from the HTML and from status.json; the sealed env var's value and the request's body, which the
program copies into its response on purpose, appear nowhere under status/; a spec blob edited in
place shows as not matching its CID instead of stopping the page."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cdp import CHROMIUM, Browser
from conftest import CLI
from test_invoke import _files_holding as files_holding
from test_invoke import _tamper, built, deploy, invoke, server_key  # noqa: F401 (server_key: the fixture)
from test_web_page import Node, by_attr, by_tag, parse

from cutor_spool.deployments.requests import drop_request
from cutor_spool.deployments.store import Store
from cutor_spool.documents.deployment import DeploymentState, InvocationRequest
from cutor_spool.layout import SpoolPaths

SECRET = "s3cr3t-page-5b4a39281706"
REQUEST_BODY = b"request-body-e1d2c3b4a596"
HEADER = "header-value-77c1d0e9"
# Copies the secret, the request's body and a header into its answer: all in the spool's results,
# none of it for the page.
RUN = """\
if [ "$QUERY_STRING" = teapot ]; then status="418 I'm a teapot"; else status="201 Created"; fi
printf 'Status: %s\\r\\nX-Token: %s\\r\\n\\r\\n' "$status" "$TOKEN"
echo "token=$TOKEN"
cat
"""
SCREENS = Path("/work/helpers/screens")


def regenerate(spool: Path, *args: str) -> tuple[Node, dict[str, Any]]:
    subprocess.run([*CLI, "--spool", str(spool), "status-page", *args], check=True, capture_output=True)
    html = (spool / "status" / "index.html").read_text()
    return parse(html), json.loads((spool / "status" / "status.json").read_text())


def cells_of(tr: Node) -> list[str]:
    return [" ".join(td.text().split()) for td in tr.find_all(by_tag("td"))]


def row(page: Node, cid: str) -> list[str]:
    """The cells of a deployment's row, as text."""
    tr = page.find(by_attr("data-cid", cid))
    return [" ".join(td.text().split()) for td in tr.find_all(by_tag("td"))]


@pytest.mark.slow
def test_the_page_shows_each_deployment_its_build_and_its_last_result_and_no_secret(
    spool: Path,
    tmp_path: Path,
    server_key: Path,  # noqa: F811 (the fixture imported above)
    executors: Any,
) -> None:
    worker = executors(spool, "--server-key", str(server_key))
    app = deploy(spool, tmp_path / "app", {"run": {"file": "run.sh"}, "env": {"TOKEN": SECRET}}, {"run.sh": RUN})
    broken = deploy(spool, tmp_path / "broken", {"compile": "echo 'cc: not found' >&2; exit 2", "run": "true"})
    idle = deploy(spool, tmp_path / "idle", {"run": "true"})
    assert built(spool, app).state == DeploymentState.READY
    assert built(spool, broken).state == DeploymentState.FAILED
    assert built(spool, idle).state == DeploymentState.READY

    answers = []
    for query in ("", "", "teapot"):
        _, out = invoke(spool, app, "--query", query, "-H", f"X-Marker: {HEADER}", data=REQUEST_BODY)
        answers.append(out)
    assert [a["response"]["status"] for a in answers] == [201, 201, 418]
    # The program did copy both into its answer: they are in the spool's results.
    assert files_holding(spool / "invocations", SECRET.encode()) != []
    assert files_holding(spool / "invocations", REQUEST_BODY) != []

    page, status = regenerate(spool)
    spec = json.loads(Store(spool).path(app).read_bytes())
    cells = row(page, app)
    cid_cell = page.find(by_attr("data-cid", app)).find(by_tag("td"))
    assert cid_cell.attrs["title"] == app and cid_cell.text() == f"{app[:10]}…{app[-6:]}"
    owner_cell = page.find(by_attr("data-cid", app)).find_all(by_tag("td"))[1]
    assert owner_cell.attrs["title"] == spec["owner"] and spec["owner"].startswith("ed25519:")
    assert cells[3].startswith("ready") and cells[4] == "3"
    assert cells[5] == "ok" and cells[6] == "418"  # the last invocation: a teapot, run to its end
    assert row(page, broken)[3].startswith("failed") and "cc: not found" in row(page, broken)[3]
    assert row(page, idle)[4] == "0" and row(page, idle)[5:] == ["\N{EN DASH}"] * 3

    # Each invocation listed under its deployment, paid by the owner (unsigned) on a free spool:
    # the executor's result/payment.json, and the owner's account in the Ledger section.
    short_owner = f"{spec['owner'][:14]}…{spec['owner'][-4:]}"
    for answer in answers:
        listed_cells = cells_of(page.find(by_attr("id", f"inv-{answer['status']['id']}")))
        assert listed_cells[0] == answer["status"]["id"] and listed_cells[1] == "ok"
        assert listed_cells[2] == str(answer["response"]["status"]) and listed_cells[3].endswith(" s")
        assert listed_cells[4:7] == [short_owner, "0.000000", "0.000000"]
    owner_account = cells_of(page.find(by_attr("data-account", spec["owner"])))
    assert owner_account[1:] == ["0.000000", "0.000000", "0.000000", "0.000000", "6"]  # 3 holds of 0, 3 settlements

    listed = {d["cid"]: d for d in status["deployments"]}
    assert list(listed) == sorted(listed, key=lambda c: (listed[c]["created"], c), reverse=True)
    assert set(listed) == {app, broken, idle}
    mine = listed[app]
    assert (mine["owner"], mine["created"], mine["problem"]) == (spec["owner"], spec["created"], None)
    assert (mine["build_state"], mine["invocations"], mine["queued"], mine["running"]) == ("ready", 3, 0, 0)
    last = answers[-1]["status"]
    assert mine["last"] == {
        "name": last["id"],
        "state": "done",
        "outcome": "ok",
        "http_status": 418,
        "finished": last["states"]["done"],
    }
    assert listed[broken]["build_state"] == "failed" and "cc: not found" in listed[broken]["build_reason"]
    counts = status["deployment_counts"]
    assert counts["total"] == 3 and counts["by_build_state"] == {"ready": 2, "failed": 1}
    assert counts["invocations"]["by_state"] == {"done": 3} and counts["invocations"]["finished"] == 3
    prom = (spool / "status" / "metrics.prom").read_text()
    assert 'cutor_spool_deployments{state="ready"} 2' in prom and 'cutor_spool_invocations{state="done"} 3' in prom

    # A waiting invocation counts as queued (no executor takes it now).
    worker.stop()
    drop_request(SpoolPaths(spool), InvocationRequest(deployment=app), REQUEST_BODY, entry_id="waiting")
    page, status = regenerate(spool)
    assert "+1 queued" in row(page, app)[4] and status["deployment_counts"]["invocations"]["queued"] == 1

    if CHROMIUM is not None:
        with Browser(tmp_path / "profile", height=700) as browser:
            browser.open((spool / "status" / "index.html").as_uri())
            browser.eval("document.getElementById('deployments').scrollIntoView()")
            shot = browser.screenshot(tmp_path / "deployments.png")
        if SCREENS.is_dir():
            (SCREENS / "deployments.png").write_bytes(shot.read_bytes())

    # A regeneration reads only new or changed invocation entries: an answer edited inside its
    # entry (no rename, so the entry's signature is the same) is not read again, until --full.
    response = spool / "invocations" / "done" / last["id"] / "result" / "response.json"
    edited = json.loads(response.read_text())
    edited["status"] = 599
    response.write_text(json.dumps(edited))
    page, status = regenerate(spool)
    assert row(page, app)[6] == "418"
    index = json.loads((spool / "status" / "_index.json").read_text())
    assert {answer["status"]["id"] for answer in answers} <= set(index["invocations"]["records"])
    page, status = regenerate(spool, "--full")
    assert row(page, app)[6] == "599"
    assert {d["cid"]: d["last"] for d in status["deployments"]}[app]["http_status"] == 599

    # A spec edited in place: the page says so, and the rest of it is still there.
    _tamper(Store(spool), app)
    page, status = regenerate(spool)
    assert "spec does not match its CID" in row(page, app)[1]
    assert {d["cid"]: d["problem"] for d in status["deployments"]}[app] == "spec does not match its CID"
    assert row(page, idle)[3].startswith("ready")

    # Nothing secret or private under status/: not the env var, not the body, not the response's header.
    for needle in (SECRET.encode(), REQUEST_BODY, HEADER.encode()):
        assert files_holding(spool / "status", needle) == [], needle


def test_a_spool_without_deployments_shows_an_empty_section(spool: Path) -> None:
    page, status = regenerate(spool)
    section = page.find(by_attr("id", "deployments"))
    assert "0 of 0" in section.text()
    assert status["deployments"] == [] and status["deployment_counts"]["total"] == 0


def test_planted_links_and_fifos_under_deployments_never_stop_or_leak_into_the_page(
    spool: Path,
    tmp_path: Path,
    server_key: Path,  # noqa: F811 (the fixture imported above)
) -> None:
    """No executor: the deployments are made by the library as `deploy` makes them, then a client
    with write access to the spool plants a symlink for a build record and a FIFO for a spec."""
    linked = deploy(spool, tmp_path / "linked", {"run": "true"})
    fifo = deploy(spool, tmp_path / "fifo", {"run": "true"})
    record = spool / "deployments" / linked / "build.json"
    record.unlink()
    record.symlink_to("/etc/shadow")
    blob = Store(spool).path(fifo)
    blob.chmod(0o644)
    blob.unlink()
    os.mkfifo(blob)
    (spool / "deployments" / "not-a-cid").mkdir()
    page, status = regenerate(spool)  # does not hang on the FIFO (check=True: it ends well)
    assert row(page, linked)[3].startswith("unknown") and "pending" not in row(page, linked)[3]
    assert "spec does not match its CID" in row(page, fifo)[1]
    assert {d["cid"] for d in status["deployments"]} == {linked, fifo}
    shadow = Path("/etc/shadow").read_bytes().split(b"\n")[0]
    assert shadow and files_holding(spool / "status", shadow) == []
