"""The front page's search, filters and charts, the queue-wait column, the staleness warning of a
finished submission's page, and a live page's output so far: in real headless Chromium, driven over
the DevTools protocol (tests/cdp.py) as a person would use it (typing, picking, opening a shared
link), with screenshots saved under the test's tmp dir and copied to $CUTOR_SPOOL_SCREENSHOTS
(default: artifacts/) for a human to look at.

The finished entries come from a real executor run (test_web_index's `finished` fixture), landed
under new names with the times of a history spanning hours (queued, claimed, finished), the way a
commit lands them (a rename into done/).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cdp import CHROMIUM, Browser
from conftest import ROOT, ExecutorProcess, drop, make_submission, need, wait_until, write_config
from test_web_index import finished  # noqa: F401 (the fixture)
from test_web_page import HOSTILE

from cutor_spool.config import StatusPageConfig
from cutor_spool.layout import SpoolPaths
from cutor_spool.watcher.claim import iso
from cutor_spool.web_status import charts, generate, regenerate
from cutor_spool.web_status.reading import LIVE_TAIL, read_live_output

PAGE = StatusPageConfig(interval=1.0, recent=15)
SCREENS = Path(os.environ.get("CUTOR_SPOOL_SCREENSHOTS") or ROOT / "artifacts")
ROWS = "[...document.querySelectorAll('table.results tbody tr')].map(r => r.dataset.id)"


def shot(browser: Browser, tmp: Path, name: str) -> Path:
    dest = browser.screenshot(tmp / "shots" / name)
    assert dest.stat().st_size > 10_000  # a real picture, not an empty page
    SCREENS.mkdir(parents=True, exist_ok=True)
    shutil.copy(dest, SCREENS / name)
    return dest


KINDS = (("alpha", "hello"), ("beta", "judged"), ("gamma", "bad"))


def name_of(i: int) -> str:
    """The i-th result landed (oldest first): alpha-00, beta-00, gamma-00, alpha-01, ..."""
    return f"{KINDS[i % 3][0]}-{i // 3:02d}"


def land_at(
    paths: SpoolPaths, source: Path, name: str, queued: float, claimed: float, done: float, **extra: Any
) -> None:
    """Copies a finished entry in under `name` with these times, committed by a rename into done/."""
    staging = paths.tmp / f"land-{name}"
    shutil.copytree(source, staging, symlinks=True)
    status_path = staging / "result" / "status.json"
    status = json.loads(status_path.read_text())
    status["states"] = {"queued": iso(queued), "claimed": iso(claimed), status["state"]: iso(done)}
    status["id"] = name
    status.update(extra)
    status_path.write_text(json.dumps(status))
    os.rename(staging, paths.submissions.done / name)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    need(CHROMIUM is not None, "chromium is not installed (scripts/setup.sh --tests installs it)")
    with Browser(tmp_path / "chromium-profile", width=1280, height=1500) as b:
        yield b


@pytest.fixture
def history(finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[SpoolPaths, dict[str, Any]]:  # noqa: F811
    """A spool whose 60 results finished over the last three hours: alpha-* (ok), beta-* (the
    judged one), gamma-* (invalid), one every three minutes, each waited 10 + i s in the queue and
    took 30 s from drop to result. Three history pages (of 20), so three data files."""
    monkeypatch.setattr(generate, "PAGE_SIZE", 20)
    paths = SpoolPaths(tmp_path / "spool")
    paths.init()
    now = time.time()
    times: dict[str, float] = {}
    for i in range(60):
        name, source = name_of(i), KINDS[i % 3][1]
        done = now - 3 * 3600 + 60 + i * 180
        land_at(paths, finished / source, name, done - 30, done - 30 + 10 + i, done)
        times[name] = done
    regenerate(paths, PAGE)
    return paths, times


def pick(browser: Browser, field: str, value: str) -> None:
    """Sets a field of the search form as a person's choice does: the value, then its events."""
    browser.eval(
        f"e = document.getElementById({json.dumps(field)}); e.value = {json.dumps(value)};"
        " e.dispatchEvent(new Event('input', {bubbles: true})); e.dispatchEvent(new Event('change', {bubbles: true}))"
    )


def visible_rows(browser: Browser, expected: list[str] | None = None, timeout: float = 10.0) -> list[str]:
    """The ids of the results table's rows; with `expected`, once they are that (the search loads
    its data files on first use), or whatever they are after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        rows: list[str] = browser.eval(ROWS)
        if expected is None or rows == expected or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


# -- search and filters ---------------------------------------------------------------------------
def test_filters_narrow_the_table_and_the_hash_restores_them(
    history: tuple[SpoolPaths, dict[str, Any]], browser: Browser, tmp_path: Path
) -> None:
    paths, times = history
    index = paths.status / "index.html"
    judged = json.loads((paths.submissions.done / "beta-00" / "result" / "status.json").read_text())
    beta_outcome = judged["outcome"] if judged["state"] == "done" else None
    assert beta_outcome in ("partial", "rejected")

    browser.open(index.as_uri())
    browser.wait("!document.getElementById('search').hidden")
    # No filter: the table the generator rendered, the 15 most recent results.
    expected_rows = [name_of(i) for i in range(59, 44, -1)]
    assert visible_rows(browser, expected_rows) == expected_rows

    # Type a prefix: every result whose id contains it, from all three data files, newest first.
    browser.eval("document.getElementById('f-id').focus()")
    browser.type("beta-0")
    expected_rows = [f"beta-{n:02d}" for n in range(9, -1, -1)]
    assert visible_rows(browser, expected_rows) == expected_rows
    # Pick a state: beta's are done, none is invalid.
    pick(browser, "f-state", "invalid")
    expected_rows = []
    assert visible_rows(browser, expected_rows) == expected_rows
    assert browser.eval("document.getElementById('f-status').textContent").startswith("0 of 60 results match")
    pick(browser, "f-state", "done")
    pick(browser, "f-outcome", beta_outcome)
    expected_rows = [f"beta-{n:02d}" for n in range(9, -1, -1)]
    assert visible_rows(browser, expected_rows) == expected_rows
    assert browser.eval("document.getElementById('recent').textContent") == "Search results (10 of 10 matches shown)"
    shared = browser.eval("location.href")
    assert shared.endswith(f"#q=beta-0&state=done&outcome={beta_outcome}")
    shot(browser, tmp_path, "search-filtered.png")

    # A time range (UTC, as the page shows times): exactly the results finished within it.
    lo, hi = sorted(times.values())[10], sorted(times.values())[20]
    expected = sorted(
        (n for n, t in times.items() if iso(lo)[:19] <= iso(t)[:19] <= iso(hi)[:19]),
        key=times.__getitem__,
        reverse=True,
    )
    assert len(expected) == 11
    browser.eval("document.getElementById('f-clear').click()")
    assert len(visible_rows(browser)) == 15  # cleared: the recent results again
    assert browser.eval("document.getElementById('recent').textContent") == "Recent results (15 of 60)"
    for field, value in (("f-from", iso(lo)[:19]), ("f-to", iso(hi)[:19])):
        pick(browser, field, value)
    expected_rows = expected
    assert visible_rows(browser, expected_rows) == expected_rows

    # The shared link, opened afresh, restores the filter: the same fields, the same rows.
    browser.open("about:blank")
    browser.open(shared)
    browser.wait("document.getElementById('f-state').value === 'done'")
    assert browser.eval("document.getElementById('f-id').value") == "beta-0"
    assert browser.eval("document.getElementById('f-outcome').value") == beta_outcome
    expected_rows = [f"beta-{n:02d}" for n in range(9, -1, -1)]
    assert visible_rows(browser, expected_rows) == expected_rows


def test_without_javascript_the_page_is_a_plain_table(
    history: tuple[SpoolPaths, dict[str, Any]], browser: Browser, tmp_path: Path
) -> None:
    paths, _ = history
    browser.call("Emulation.setScriptExecutionDisabled", {"value": True}, session=True)
    browser.open((paths.status / "index.html").as_uri() + "#q=beta")
    # The page's scripts did not run (the DevTools protocol still reads the DOM): no search form,
    # no charts, the recent results unfiltered, and the page refreshes itself by <meta>.
    assert browser.eval("document.getElementById('search').hidden") is True
    assert browser.eval("document.getElementById('chart-grid').hidden") is True
    expected_rows = [name_of(i) for i in range(59, 44, -1)]
    assert visible_rows(browser, expected_rows) == expected_rows
    assert browser.eval("document.querySelector('noscript meta[http-equiv=refresh]').content") == "5"
    assert browser.eval("document.getElementById('stale').hidden") is True
    shot(browser, tmp_path, "no-javascript.png")


def test_queue_wait_column(history: tuple[SpoolPaths, dict[str, Any]], browser: Browser) -> None:
    paths, _ = history
    # gamma-19 is the 60th landed (i = 59): it waited 10 + 59 s from queued to claimed.
    html = (paths.status / "index.html").read_text()
    row = html[html.index('<tr data-id="gamma-19">') :]
    assert '<td class="num">69.0 s</td>' in row[: row.index("</tr>")]
    # Its own page says it too, with the time from drop to result.
    own = (paths.status / "s" / "gamma-19.html").read_text()
    assert '<dd id="queue-wait">69.0 s</dd>' in own and '<dd id="latency">30.0 s</dd>' in own
    browser.open((paths.status / "index.html").as_uri() + "#q=alpha-00")  # rows drawn by page.js
    browser.wait("document.querySelectorAll('table.results tbody tr').length === 1")
    headers = browser.eval("[...document.querySelectorAll('table.results th')].map(h => h.textContent)")
    cells = browser.eval("[...document.querySelectorAll('table.results tbody td')].map(c => c.textContent)")
    assert cells[headers.index("Queue wait")] == "10.0 s"  # i = 0


def test_a_hostile_message_found_by_the_search_is_text(
    finished: Path,  # noqa: F811
    tmp_path: Path,
    browser: Browser,
) -> None:
    """The rows the search draws come from data a submission partly controls (its messages): they
    reach the page as text, never as markup."""
    paths = SpoolPaths(tmp_path / "spool")
    paths.init()
    now = time.time()
    land_at(paths, finished / "hello", "evil-1", now - 60, now - 50, now - 40, message=HOSTILE)
    land_at(paths, finished / "hello", "fine-1", now - 60, now - 50, now - 30)
    regenerate(paths, PAGE)
    browser.open((paths.status / "index.html").as_uri() + "#q=evil")
    assert visible_rows(browser, ["evil-1"]) == ["evil-1"]
    shown = browser.eval("document.querySelector('tr[data-id=\"evil-1\"] td.msg').textContent")
    assert shown == HOSTILE.replace("\x1b", "\\x1b")
    assert browser.eval("document.querySelectorAll('table.results img, #injected').length") == 0
    assert browser.eval("document.body.hasAttribute('data-pwned')") is False
    assert "PWNED" not in browser.eval("document.title")


# -- charts ---------------------------------------------------------------------------------------
def test_charts_render_the_spools_series(
    history: tuple[SpoolPaths, dict[str, Any]], browser: Browser, tmp_path: Path
) -> None:
    paths, _ = history
    # The queue's depth is sampled at each regeneration: over the last hours, the queue grew to
    # 5 entries and drained (entries dropped into incoming/, each sample by a regeneration then).
    now = time.time()
    depths = [0, 2, 4, 5, 3, 1]
    for k, depth in enumerate(depths):
        for j in range(depth):
            (paths.submissions.incoming / f"waiting-{k}-{j}").mkdir()
        regenerate(paths, PAGE, wall=lambda k=k: now - 3 * 3600 + 1800 * k)
        for j in range(depth):
            (paths.submissions.incoming / f"waiting-{k}-{j}").rmdir()
    regenerate(paths, PAGE, wall=lambda: now)
    browser.open((paths.status / "index.html").as_uri())
    browser.wait("document.querySelectorAll('figure.chart canvas').length === 3")
    charts = browser.eval(
        "[...document.querySelectorAll('figure.chart')].map(f => ({id: f.id, series: f.dataset.series,"
        " points: +f.dataset.points, w: f.querySelector('canvas').width, h: f.querySelector('canvas').height}))"
    )
    assert {c["id"]: c["series"] for c in charts} == {
        "chart-queue": "waiting,running",
        "chart-throughput": "finished/min",
        "chart-latency": "p50,p95",
    }
    assert all(c["w"] > 200 and c["h"] > 100 for c in charts)
    assert browser.eval("document.body.getAttribute('data-chart-error')") is None
    # The data behind them is the spool's: 60 finishes in the window, each 30 s from drop to result.
    data = json.loads(browser.eval("document.getElementById('chart-data').textContent"))
    assert sum(data["finished"]) == 60
    assert {v for v in data["p50"] + data["p95"] if v is not None} == {30.0}
    assert data["samples"]["queued"] == [
        *depths,
        0,
    ]  # and now (the last two regenerations, 5 s apart at most: one sample)
    # Drawn, not blank: the latency chart's canvas has its red p95 line's pixels.
    red = browser.eval(
        "(() => { const c = document.querySelector('#chart-latency canvas'); const d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; let n = 0; for (let i = 0; i < d.length; i += 4)"
        " if (d[i] > 150 && d[i + 1] < 80 && d[i + 2] < 80) n++; return n; })()"
    )
    assert red > 100
    shot(browser, tmp_path, "charts.png")


# -- staleness and live output, with a real worker ----------------------------------------------------
@pytest.mark.slow
def test_a_finished_page_warns_only_when_nothing_regenerates(
    finished: Path,  # noqa: F811
    tmp_path: Path,
    browser: Browser,
) -> None:
    spool = tmp_path / "spool"
    paths = SpoolPaths(spool)
    paths.init()
    write_config(spool, status_page={"interval": "0.3s"})
    now = time.time()
    land_at(paths, finished / "hello", "old-result", now - 3700, now - 3690, now - 3660)
    # The site as it was an hour ago, when the result landed; nothing has regenerated it since.
    regenerate(paths, StatusPageConfig(interval=0.3), wall=lambda: now - 3600)
    result_page = paths.status / "s" / "old-result.html"
    rendered = result_page.read_bytes()

    browser.open(result_page.as_uri())
    banner = browser.wait("!document.getElementById('stale').hidden && document.getElementById('stale').textContent")
    assert banner.startswith("The status page has not been regenerated for 60 min: is any worker running?")
    shot(browser, tmp_path, "stale-banner.png")
    browser.open((paths.status / "index.html").as_uri())  # the front page says the same
    assert (
        browser.wait("!document.getElementById('stale').hidden && document.getElementById('stale').textContent")
        == banner
    )

    executor = ExecutorProcess(spool, ["executor", "--concurrency", "1", "--grace", "1"], tmp_path / "executor.log")
    try:
        # The worker keeps the site fresh (fresh.js), without rendering the final page again.
        wait_until(
            lambda: json.loads((paths.status / "status.json").read_text())["generated_unix"] > now, 60, "a regeneration"
        )
        assert result_page.read_bytes() == rendered
        browser.open(result_page.as_uri())
        browser.wait("window.cutorSpoolFresh && Date.parse(window.cutorSpoolFresh.generated) > Date.now() - 60000")
        assert browser.eval("document.getElementById('stale').hidden") is True
        assert browser.eval("document.getElementById('generated-ago').textContent") == "(60 min ago)"
        # An open page loads fresh.js again as time goes by (every 10 s): it follows the workers.
        seen = browser.eval("window.cutorSpoolFresh.generated")
        browser.wait(f"window.cutorSpoolFresh.generated !== {json.dumps(seen)}", timeout=30)
        shot(browser, tmp_path, "finished-page-no-banner.png")

        # A running submission's page shows its output so far, from result/live/<stage>.out, which
        # the runner writes while the stage runs (runner/live.py).
        work = tmp_path / "work"
        job = {"run": "echo started; echo '<b>step 1 of 3</b>'; sleep 60", "limits": {"run": {"wall_time": "90s"}}}
        drop(spool, make_submission(work, "slow", job), "slow")
        wait_until(lambda: next(paths.submissions.active.glob("slow*"), None), 60, "slow claimed")
        live_page = paths.status / "live" / "slow.html"
        wait_until(
            lambda: live_page.exists() and "step 1 of 3" in live_page.read_text(), 60, "the output on the live page"
        )
        browser.open(live_page.as_uri())
        assert (
            browser.eval("document.querySelector('pre[data-live=run]').textContent") == "started\n<b>step 1 of 3</b>\n"
        )
        assert browser.eval("document.querySelectorAll('pre[data-live] b').length") == 0
        shot(browser, tmp_path, "live-output.png")
    finally:
        executor.stop()


def test_chart_series_percentiles_and_rates() -> None:
    """The series' arithmetic (charts.py), where one interval holds many results: 20 results
    finished within the same 10 s, 1 to 20 s after they were dropped; one older than the window;
    one without times."""
    now = 1_800_000_000.0
    ends = [now - 100 + k * 0.25 for k in range(20)] + [now - 7 * 3600, None]
    latency = [float(k + 1) for k in range(20)] + [5.0, None]
    data = charts.series(ends, latency, [[now - 50, 7, 2]], now)
    assert data["step"] == 10 and data["times"][0] == now - 100
    at = data["times"].index(now - 100)
    assert data["finished"][at] == 20 and sum(data["finished"]) == 20  # the old one is outside the window
    assert data["per_minute"][at] == 120.0
    assert (data["p50"][at], data["p95"][at]) == (10.0, 19.0)  # nearest rank of 1..20
    assert data["p50"][at + 1] is None  # nothing finished: a gap, not a zero
    assert data["samples"] == {"times": [now - 50], "queued": [7], "running": [2]}


def test_live_output_is_the_tail_of_regular_files_only(tmp_path: Path) -> None:
    """result/live/<stage>.out as a live page reads it: the last 64 KiB, never through a link
    (a submission could plant one pointing at a host file), never a FIFO (it would block)."""
    entry = tmp_path / "entry"
    live_dir = entry / "result" / "live"
    live_dir.mkdir(parents=True)
    (live_dir / "run.out").write_bytes(b"x" * 100_000 + b"\nlast line\n")
    (live_dir / "compile.out").write_text("gcc says hi\n")
    (live_dir / "secret.out").symlink_to("/etc/passwd")
    os.mkfifo(live_dir / "fifo.out")
    found = {o.stage: o for o in read_live_output(entry)}
    assert sorted(found) == ["compile", "run"]
    assert found["compile"].text == "gcc says hi\n" and found["compile"].skipped == 0
    assert found["run"].text.endswith("x\nlast line\n") and len(found["run"].text) == LIVE_TAIL
    assert found["run"].skipped == 100_011 - LIVE_TAIL
    # A result/ that is itself a link shows nothing.
    other = tmp_path / "other"
    other.mkdir()
    (other / "result").symlink_to(entry / "result")
    assert read_live_output(other) == []
