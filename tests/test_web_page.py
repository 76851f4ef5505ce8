"""The status page as people see it: a real executor runs real submissions and regenerates the page
by itself; headless Chromium opens it; what it shows is checked from the DOM Chromium built (after
its scripts ran), and a screenshot is saved (test tmp dir, and `artifacts/` for a human to look at).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, ROOT, ExecutorProcess, drop, make_submission, need, wait_done, write_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
# What a hostile program prints: if any of it were markup, the page would run it or grow elements.
HOSTILE = (
    '<script>document.title="PWNED"</script>'
    "<img src=x onerror=\"document.body.setAttribute('data-pwned', '1')\">"
    '<b id="injected">bold</b> &amp; \x1b[31mred'
)


# -- a small DOM over html.parser (stdlib): enough to ask what an element shows ---------------------
@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def find_all(self, pred: Callable[[Node], bool]) -> list[Node]:
        out = [self] if pred(self) else []
        for child in self.children:
            if isinstance(child, Node):
                out += child.find_all(pred)
        return out

    def find(self, pred: Callable[[Node], bool]) -> Node:
        found = self.find_all(pred)
        assert found, "element not found"
        return found[0]


VOID = {"meta", "link", "br", "img", "input", "hr", "col", "area", "base", "source", "wbr"}


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(html: str) -> Node:
    builder = _Builder()
    builder.feed(html)
    return builder.root


def by_attr(name: str, value: str | None = None) -> Callable[[Node], bool]:
    return lambda n: name in n.attrs and (value is None or n.attrs[name] == value)


def by_tag(tag: str) -> Callable[[Node], bool]:
    return lambda n: n.tag == tag


# -- Chromium -----------------------------------------------------------------------------------------
def chromium(profile: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    argv = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
        url,
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def dom(profile: Path, page: Path) -> Node:
    return parse(chromium(profile, page.as_uri(), "--dump-dom").stdout)


def screenshot(profile: Path, page: Path, dest: Path, height: int = 1600) -> None:
    chromium(profile, page.as_uri(), f"--screenshot={dest}", f"--window-size=1280,{height}")
    assert dest.stat().st_size > 10_000  # a real picture, not an empty page
    artifacts = ROOT / "artifacts"
    artifacts.mkdir(exist_ok=True)
    shutil.copy(dest, artifacts / dest.name)


# -- the spool ----------------------------------------------------------------------------------------
def page_status(spool: Path) -> dict[str, Any]:
    return json.loads((spool / "status" / "status.json").read_text())


def wait_page(spool: Path, pred: Callable[[dict[str, Any]], bool], timeout: float = 60.0) -> dict[str, Any]:
    """Waits until the page the *worker* regenerates shows what `pred` wants."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            last = page_status(spool)
            if pred(last):
                return last
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"the page never showed it; last status.json counts: {last.get('counts')}")


@dataclass
class Site:
    spool: Path
    executor: ExecutorProcess
    profile: Path
    shots: Path
    running: dict[str, Any]  # status.json while `slow` was running


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("web")
    spool = tmp / "spool"
    subprocess.run([*CLI, "--spool", str(spool), "init"], check=True, capture_output=True)
    write_config(spool, status_page={"interval": "0.3s"})
    work = tmp / "work"
    subs = {
        "hello": make_submission(work, "hello", {"run": "echo hello, world"}),
        "hostile": make_submission(work, "hostile", {"run": "cat payload.txt"}, {"payload.txt": HOSTILE + "\n"}),
        "crash": make_submission(work, "crash", {"run": "echo about to fail >&2; exit 3"}),
        "broken-c": make_submission(
            work, "broken-c", {"compile": "gcc -o prog prog.c", "run": "./prog"}, {"prog.c": "int main( {"}
        ),
        "bad-yaml": make_submission(work, "bad-yaml", {"run": "true", "no_such_field": 1}),
    }
    executor = ExecutorProcess(spool, ["executor", "--concurrency", "2", "--grace", "1"], tmp / "executor.log")
    try:
        for name, directory in subs.items():
            drop(spool, directory, name)
        wait_done(spool, list(subs), timeout=120)
        slow = make_submission(work, "slow", {"run": "echo started; sleep 60", "limits": {"run": {"wall_time": "90s"}}})
        drop(spool, slow, "slow")
        running = wait_page(
            spool,
            lambda s: (
                s["counts"]["finished"] == 5 and any(a["id"] == "slow" and a["state"] == "running" for a in s["active"])
            ),
        )
        yield Site(spool, executor, tmp / "chromium-profile", tmp / "shots", running)
    finally:
        executor.stop()


# -- what the worker wrote ----------------------------------------------------------------------------
def test_worker_regenerates_the_page_with_every_state_and_result(site: Site) -> None:
    status = site.running
    assert status["generated_by"].startswith("executor-")
    expected = dict.fromkeys(status["counts"]["by_state"], 0) | {"done": 4, "invalid": 1, "running": 1}
    assert status["counts"]["by_state"] == expected
    assert status["counts"]["by_outcome"] == {"ok": 2, "runtime_error": 1, "compile_error": 1}
    recent = {r["name"]: r for r in status["recent"]}
    assert {n: (r["state"], r["outcome"]) for n, r in recent.items()} == {
        "hello": ("done", "ok"),
        "hostile": ("done", "ok"),
        "crash": ("done", "runtime_error"),
        "broken-c": ("done", "compile_error"),
        "bad-yaml": ("invalid", None),
    }
    assert "no_such_field" in (recent["bad-yaml"]["message"] or "")
    assert recent["hello"]["cpu_time"] is not None and recent["hello"]["memory"] > 0
    workers = [w for w in status["workers"] if w["kind"] == "executor"]
    assert len(workers) == 1 and workers[0]["alive"]
    assert [c["id"] for c in workers[0]["current"]] == ["slow"]
    for name in recent:
        assert (site.spool / "status" / "s" / f"{name}.html").is_file()
    assert (site.spool / "status" / "live" / "slow.html").is_file()


def test_metrics_prom_parses_and_agrees_with_status_json(site: Site) -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    text = (site.spool / "status" / "metrics.prom").read_text()
    status = page_status(site.spool)
    families = {f.name: f for f in parser.text_string_to_metric_families(text)}
    by_state = {s.labels["state"]: s.value for s in families["cutor_spool_submissions"].samples}
    assert by_state == status["counts"]["by_state"]
    outcomes = {s.labels["outcome"]: s.value for s in families["cutor_spool_outcomes"].samples if s.value}
    assert outcomes == status["counts"]["by_outcome"]
    alive = {(s.labels["kind"], s.labels["alive"]): s.value for s in families["cutor_spool_workers"].samples}
    assert alive[("executor", "true")] == 1
    assert families["cutor_spool_status_generated_timestamp_seconds"].samples[0].value == status["generated_unix"]


def test_hostile_output_is_text_in_the_html(site: Site) -> None:
    html = (site.spool / "status" / "s" / "hostile.html").read_text()
    assert '<script>document.title="PWNED"' not in html
    assert '<b id="injected">' not in html
    assert "&lt;script&gt;document.title=&#34;PWNED&#34;&lt;/script&gt;" in html
    assert "\x1b" not in html and "\\x1b[31mred" in html  # an escape sequence is shown, not sent


# -- what Chromium shows ------------------------------------------------------------------------------
def test_chromium_shows_states_results_and_escaped_output(site: Site) -> None:
    need(CHROMIUM is not None, "chromium is not installed (scripts/setup.sh --tests installs it)")
    site.shots.mkdir(exist_ok=True)
    index = site.spool / "status" / "index.html"
    # The screenshot first, while `slow` is still running: a human sees every section filled.
    screenshot(site.profile, index, site.shots / "status-page-index.png", height=1800)
    doc = dom(site.profile, index)

    cards = {n.attrs["data-state"]: n.find(by_attr("class", "n")).text() for n in doc.find_all(by_attr("data-state"))}
    assert cards == {"queued": "0", "active": "1", "done": "4", "invalid": "1", "error": "0"}

    rows = {n.attrs["data-id"]: n for n in doc.find_all(lambda n: n.tag == "tr" and "data-id" in n.attrs)}
    results = {
        name: rows[name].find(by_tag("span")).text() for name in ("hello", "hostile", "crash", "broken-c", "bad-yaml")
    }
    assert results == {
        "hello": "ok",
        "hostile": "ok",
        "crash": "runtime error",
        "broken-c": "compile error",
        "bad-yaml": "invalid",
    }
    assert "running" in rows["slow"].text()  # the active submission, with its current state
    worker = doc.find(by_attr("data-worker"))
    assert "alive" in worker.text() and "slow" in worker.text()
    # page.js ran (it fills in how old the page is): the script is allowed by the page's CSP.
    assert doc.find(by_attr("id", "generated-ago")).text().endswith("ago)")

    hostile = site.spool / "status" / "s" / "hostile.html"
    screenshot(site.profile, hostile, site.shots / "status-page-hostile.png")
    page = dom(site.profile, hostile)
    title = page.find(by_tag("title")).text()
    assert "PWNED" not in title and title.startswith("hostile")
    assert not page.find_all(by_attr("id", "injected"))
    assert "data-pwned" not in page.find(by_tag("body")).attrs
    assert not page.find_all(by_tag("img"))
    shown = page.find(by_attr("data-stream", "run-stdout")).text()
    assert shown == HOSTILE.replace("\x1b", "\\x1b") + "\n"


def test_live_page_follows_a_running_submission_then_points_to_its_result(site: Site) -> None:
    need(CHROMIUM is not None, "chromium is not installed (scripts/setup.sh --tests installs it)")
    live = site.spool / "status" / "live" / "slow.html"
    page = dom(site.profile, live)
    assert page.find(by_attr("id", "state")).text() == "running"
    # It refreshes itself: page.js does (the <meta> refresh is for browsers without scripts).
    assert int(page.find(by_tag("body")).attrs["data-refresh"]) > 0
    assert '<noscript><meta http-equiv="refresh"' in live.read_text()

    # Stop the worker: it hands `slow` back (after its 1 s grace); the page drops it from "running".
    site.executor.stop()
    subprocess.run([*CLI, "--spool", str(site.spool), "status-page"], check=True, capture_output=True)
    status = page_status(site.spool)
    assert status["counts"]["active"] == 0 and status["counts"]["queued"] == 1
    assert not live.exists()  # requeued: no page pretends it is running
