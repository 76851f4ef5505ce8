"""Regenerating `status/` from the spool: one call, safe to run from any number of workers at once.

    status/index.html            counts, workers, running, queue, recent results, environments,
                                 deployments (deployments.py), the ledger (ledger.py)
    status/s/<name>.html         one page per finished submission (rendered once, when it lands)
    status/live/<id>.html        one page per running submission, refreshing itself; once it has
                                 finished, a redirect to its s/ page for a while, then removed
    status/history/<n>.html      every result, PAGE_SIZE a page, oldest first
    status/history/<n>.js        the same results as data, for the front page's search (search.py)
    status/fresh.js              when the site was last regenerated (every page's staleness warning)
    status/status.json           the same figures for machines
    status/metrics.prom          the counts for Prometheus (node_exporter's textfile collector)
    status/_index.json           the incremental index (see index.py)
    status/_ledger.json          what the page read of each account's journal (ledger.py)
    status/_samples.json         queue depth samples for the front page's charts (charts.py)
    status/static/               stylesheet, script, uPlot (the charts)

Cost per regeneration: a `scandir` and an `lstat` per finished submission, reading and rendering
only what changed, the live parts (queue, active entries, heartbeats), and the front page. Writes
are atomic renames; no lock is taken, so two workers on two hosts may regenerate at the same
moment (see index.py for why that is safe).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cutor_spool import __version__
from cutor_spool.atomic import TEMPORARY_PREFIX, write_bytes
from cutor_spool.config import StatusPageConfig
from cutor_spool.errors import SpoolIOError
from cutor_spool.layout import SpoolPaths
from cutor_spool.web_status import deployments, ledger, live, queues
from cutor_spool.web_status.charts import SAMPLES_NAME, record_sample, series
from cutor_spool.web_status.index import (
    INDEX_NAME,
    STAMP_SETTLE,
    Index,
    directory_stamp,
    paginate,
    scan,
)
from cutor_spool.web_status.metrics import machine_status, prometheus
from cutor_spool.web_status.model import detail
from cutor_spool.web_status.reading import read_entry, read_live_output
from cutor_spool.web_status.render import RENDER_VERSION, install_static, iso_now, render, write_page
from cutor_spool.web_status.search import ROW_KEYS, chunk

log = logging.getLogger(__name__)

PAGE_SIZE = 200  # the last page is rendered again whenever a submission finishes: keep it small
SAVE_EVERY = 2000  # a cold build of a large spool saves its progress now and then
LIVE_REDIRECT_KEEP = 600.0  # seconds a finished submission's live page keeps redirecting
LIVE_SIGS = "_live.json"  # what each live page was rendered from
FRESH_NAME = "fresh.js"  # when the site was last regenerated, for the pages' staleness warning
LIVE_RERENDER = 10.0  # well within the page's staleness warning (at least 30 s)


@dataclass(frozen=True)
class Report:
    seconds: float
    done: int  # finished submissions on the page
    rendered: int  # their pages rendered this time
    removed: int
    live: int
    history_rendered: int
    full: bool


def _pages(out: Path) -> None:
    """The page's folders, inside a `status/` that `init` made: never `status/` itself, whose
    owner and mode are the spool's to choose (a shared spool's is its operators' alone, 2750,
    docs/shared-spool.md), and which everything below inherits."""
    if not out.is_dir():
        raise SpoolIOError(f"{out} is missing: run `cutor-spool init` (again) to make it with the spool's modes")
    for sub in ("s", "live", "history"):
        (out / sub).mkdir(exist_ok=True)


STALE_TEMPORARY = 600.0  # seconds: no write of a page takes that long


def _sweep_temporaries(directories: list[Path], now: float) -> None:
    """Removes the temporaries of writers killed mid-write (`write_bytes`'s TEMPORARY_PREFIX names)."""
    for directory in directories:
        try:
            with os.scandir(directory) as it:
                for entry in it:
                    try:
                        if (
                            entry.name.startswith(TEMPORARY_PREFIX)
                            and now - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMPORARY
                        ):
                            os.unlink(entry.path)
                    except OSError:
                        continue
        except OSError:
            continue


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class Generator:
    def __init__(self, paths: SpoolPaths, config: StatusPageConfig, *, generator: str, now: float, wall: float) -> None:
        self.paths, self.config, self.generator = paths, config, generator
        self.out = paths.status
        self.now = now  # the filesystem's clock: ages of queue entries and heartbeats
        self.wall = wall  # this host's clock: what the browser compares "generated" with
        self.common: dict[str, Any] = {
            "spool": os.path.abspath(paths.root),
            "generated": iso_now(self.wall),
            # The browser warns when the page is older than this: a few missed regenerations.
            "stale_after": max(30.0, 10 * config.interval),
            "version": __version__,
        }
        self.refresh = max(5, round(config.interval))

    def _submission(self, name: str, entry: Path, *, live_page: bool) -> tuple[bytes, dict[str, Any]]:
        files = read_entry(entry)
        view = detail(name, files.status, files.stages, files.tests, files.events, live=live_page)
        html = render(
            "submission.html",
            d=view,
            root="../",
            refresh=self.refresh if live_page else None,
            entry_path=os.path.abspath(entry),
            live_output=read_live_output(entry) if live_page else [],
            **self.common,
        )
        return html, view.summary

    def done(self, index: Index) -> tuple[int, int]:
        done_dir = self.paths.submissions.done
        # Nothing lands in done/ but by a rename into it, which changes the directory's mtime: an
        # unchanged directory needs no scan (the common case between two finished submissions).
        stamp = directory_stamp(done_dir)
        if stamp is not None and stamp == index.done.directory:
            return 0, 0
        scanned = scan(done_dir, index.done.sigs)
        changed, removed = index.done.changes(scanned)
        settled = stamp is not None and self.now - stamp[1] / 1e9 > STAMP_SETTLE
        if index.done.directory != (stamp if settled else None):
            index.done.directory = stamp if settled else None
            index.done.dirty = True
        for count, name in enumerate(changed, 1):
            html, summary = self._submission(name, done_dir / name, live_page=False)
            write_page(self.out / "s" / f"{name}.html", html)
            index.done.put(name, scanned[name], summary)
            if count % SAVE_EVERY == 0:
                index.save(self.out / INDEX_NAME)
        for name in removed:
            _unlink(self.out / "s" / f"{name}.html")
            index.done.remove(name)
        return len(changed), len(removed)

    def builds(self, index: Index) -> None:
        done_dir = self.paths.builds.done
        scanned = {name: live.build_signature(done_dir / name, sig) for name, sig in scan(done_dir).items()}
        changed, removed = index.builds.changes(scanned)
        for name in changed:
            index.builds.put(name, scanned[name], live.build_summary(done_dir / name))
        for name in removed:
            index.builds.remove(name)

    def live_pages(self, index: Index, active: list[live.ActiveEntry]) -> set[str]:
        """Renders a page per running submission; a page whose submission has finished becomes a
        redirect to its result (people have it open), removed after LIVE_REDIRECT_KEEP."""
        shown = set()
        known = _read_live_sigs(self.out / LIVE_SIGS)
        sigs: dict[str, list[Any]] = {}
        for entry in active:
            if entry.id in index.done:
                continue  # a duplicate of a finished id: its page name is taken by the result
            shown.add(entry.id)
            # Rendered again when its results changed (a new stage file changes result/'s mtime, a
            # transition replaces status.json), and every LIVE_RERENDER seconds anyway, so that
            # the page's own "generated at" never looks stale while the submission runs quietly.
            epoch = int(self.wall // LIVE_RERENDER)
            sig: list[Any] = [entry.token, epoch, *live.result_stamp(entry.path)]
            sigs[entry.id] = sig
            page = self.out / "live" / f"{entry.id}.html"
            if known.get(entry.id) == sig and page.exists():
                continue
            html, _ = self._submission(entry.id, entry.path, live_page=True)
            write_page(page, html)
        if sigs != known:
            write_bytes(self.out / LIVE_SIGS, json.dumps(sigs).encode(), fsync=False)
        live_dir = self.out / "live"
        with os.scandir(live_dir) as it:
            stale = [e for e in it if e.name.endswith(".html") and not e.name.startswith(".")]
        for item in stale:
            name = item.name[: -len(".html")]
            if name in shown:
                continue
            path = live_dir / item.name
            if name not in index.done:
                _unlink(path)  # requeued or gone: it has no page now
                continue
            redirect = render("moved.html", name=name, target=f"../s/{name}.html")
            try:
                current = path.read_bytes()
                age = self.wall - item.stat(follow_symlinks=False).st_mtime
            except OSError:
                continue
            if current != redirect:
                write_page(path, redirect)
            elif age > LIVE_REDIRECT_KEEP:
                _unlink(path)
        return shown

    def history(self, index: Index, ordered: list[str]) -> tuple[list[dict[str, Any]], int]:
        pages = paginate(ordered, index.done, PAGE_SIZE)
        rendered = 0
        listing = []
        for number, (members, signature) in enumerate(pages, 1):
            path = self.out / "history" / f"{number}.html"
            known = index.history[number - 1] if number <= len(index.history) else None
            if known != signature or not path.exists():
                html = render(
                    "history.html",
                    number=number,
                    last=number == len(pages),
                    rows=index.done.summaries(list(reversed(members))),
                    root="../",
                    refresh=None,
                    **self.common,
                )
                write_page(path, html)
                write_page(path.with_suffix(".js"), chunk(number, index.done.summaries(members)))
                rendered += 1
            first, last = index.done.summary(members[0])["finished"], index.done.summary(members[-1])["finished"]
            listing.append(
                {"number": number, "first": first, "last": last, "count": len(members), "version": signature[:12]}
            )
        for number in range(len(pages) + 1, len(index.history) + 1):
            _unlink(self.out / "history" / f"{number}.html")
            _unlink(self.out / "history" / f"{number}.js")
        signatures = [signature for _, signature in pages]
        if signatures != index.history:
            index.history, index.history_dirty = signatures, True
        return listing, rendered


def _cards(status: dict[str, Any]) -> list[dict[str, Any]]:
    by_state = status["counts"]["by_state"]
    return [
        {"key": "queued", "label": "queued", "n": by_state["queued"], "tone": "busy"},
        {"key": "active", "label": "running", "n": status["counts"]["active"], "tone": "busy"},
        {"key": "done", "label": "done", "n": by_state["done"], "tone": "good"},
        {"key": "invalid", "label": "invalid", "n": by_state["invalid"], "tone": "bad" if by_state["invalid"] else ""},
        {"key": "error", "label": "error", "n": by_state["error"], "tone": "bad" if by_state["error"] else ""},
    ]


def regenerate(
    paths: SpoolPaths,
    config: StatusPageConfig,
    *,
    now: Callable[[], float] = time.time,
    wall: Callable[[], float] = time.time,
    full: bool = False,
    generator: str = "cutor-spool status-page",
) -> Report:
    """Brings `status/` up to date. `now` is the filesystem's clock (`FsClock.now`) where
    heartbeats and queue ages must be judged against it; `wall` is this host's clock, which stamps the
    pages for the browser; `full` re-reads and re-renders everything."""
    started = time.perf_counter()
    out = paths.status
    _pages(out)
    install_static(out)
    gen = Generator(paths, config, generator=generator, now=now(), wall=wall())
    # The top level (the files written every time) at every regeneration; the page folders, as
    # large as the spool's history, only with `full`.
    _sweep_temporaries([out, *((out / sub for sub in ("s", "live", "history")) if full else ())], gen.now)
    index = Index(RENDER_VERSION) if full else Index.load(out / INDEX_NAME, RENDER_VERSION)
    rendered, removed = gen.done(index)
    gen.builds(index)
    deployments.update_invocations(paths, index, gen.now)
    deployments.update_deployments(paths, index)
    active = live.active(paths.submissions)
    shown = gen.live_pages(index, active)
    queue = live.queue(paths.submissions.incoming, gen.now)
    workers = live.workers(paths.workers, gen.now)
    ordered = index.done.ordered("finished")
    history, history_rendered = gen.history(index, ordered)
    recent = index.done.summaries(list(reversed(ordered[-config.recent :])))
    environments = sorted(index.builds.summaries(), key=lambda e: (e["built_at"] or "", e["name"]), reverse=True)
    builds = {
        "queued": live.count_entries(paths.builds.incoming),
        "active": live.count_entries(paths.builds.active),
        "done": len(environments),
        "environments": [{k: v for k, v in e.items() if k != "package_list"} for e in environments],
        "packages": live.packages(environments),
    }
    header = {
        "generated_at": gen.common["generated"],
        "generated_unix": round(gen.wall, 3),
        "generated_by": gen.generator,
        "spool": gen.common["spool"],
    }
    deployed = deployments.view(paths, index, config.recent)
    books = ledger.view(ledger.update(paths.root, out, full=full), min(config.recent, ledger.CHARGES_SHOWN)).as_dict()
    status = machine_status(header, index, queue, active, workers, recent, builds, deployed)
    status["ledger"] = books
    status["queues"] = queues.queues_json(queues.queue_lanes(paths, gen.now))
    samples = record_sample(out / SAMPLES_NAME, gen.wall, queue.length, len(active))
    charts = series(index.done.column("finished_unix"), index.done.column("latency"), samples, gen.wall)
    page = render(
        "index.html",
        root="",
        refresh=gen.refresh,
        cards=_cards(status),
        outcomes=sorted(status["counts"]["by_outcome"].items(), key=lambda kv: -kv[1]),
        workers=workers,
        alive=sum(1 for w in workers if w.alive),
        active=[{**a.__dict__, "page": a.id in shown} for a in active],
        live_ids=shown,  # a worker's current claims link to a live page only when there is one
        queue=queue,
        recent=recent,
        total_done=len(ordered),
        history=list(reversed(history)),
        page_size=PAGE_SIZE,
        builds=builds,
        deployed=deployed,
        books=books,
        invocation_ids={i["name"] for d in deployed["deployments"] for i in d["recent"]},
        charts=charts,
        result_files=[f"history/{h['number']}.js?v={h['version']}" for h in history],
        row_keys=list(ROW_KEYS),
        outcome_names=sorted({o for o in index.done.column("outcome") if o}),
        **gen.common,
    )
    write_page(out / "index.html", page)
    # Read by every page (final ones too) to tell whether anyone still regenerates the site.
    write_page(out / FRESH_NAME, _fresh(gen))
    status["generation_seconds"] = round(time.perf_counter() - started, 4)
    write_bytes(out / "metrics.prom", prometheus(status).encode(), fsync=False)
    # status.json last among the outputs: its mtime tells other workers when the page was fresh.
    write_bytes(out / "status.json", _json(status), fsync=False)
    if index.dirty:
        index.save(out / INDEX_NAME)
    report = Report(
        seconds=time.perf_counter() - started,
        done=len(ordered),
        rendered=rendered,
        removed=removed,
        live=len(shown),
        history_rendered=history_rendered,
        full=full,
    )
    log.debug("status page: %s", report)
    return report


def _fresh(gen: Generator) -> bytes:
    data = {"generated": gen.common["generated"], "stale_after": gen.common["stale_after"]}
    return f"window.cutorSpoolFresh = {json.dumps(data)};\n".encode()


def _read_live_sigs(path: Path) -> dict[str, list[Any]]:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, list)} if isinstance(data, dict) else {}


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=1, ensure_ascii=False) + "\n").encode()
