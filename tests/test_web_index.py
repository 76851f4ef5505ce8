"""The page's incremental index and its robustness: only what changed is read and rendered; a lost
or foreign index means a full rebuild; hostile files in an entry are never followed; several writers
at once leave a whole page; workers throttle and never fail because of the page.

Finished entries come from a real executor run (module fixture) and are copied under new names
into fresh spools, the way a commit lands them (a rename into done/).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, ExecutorProcess, drop, make_submission, wait_done, wait_until, write_config

from cutor_spool.config import SpoolConfig, StatusPageConfig
from cutor_spool.documents.states import ATTEMPTS_LOG, Outcome, State
from cutor_spool.layout import SpoolPaths
from cutor_spool.runner.results import Reporter
from cutor_spool.watcher.clock import FsClock
from cutor_spool.watcher.queue import SpoolQueue, WorkerIdentity
from cutor_spool.watcher.worker import Maintenance
from cutor_spool.web_status import StatusPageJob, generate, regenerate
from cutor_spool.web_status.index import INDEX_NAME

PAGE = StatusPageConfig(interval=1.0, recent=50)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """done/ of a spool where a real executor ran: ok, a big output, a judged one, invalid."""
    tmp = tmp_path_factory.mktemp("finished")
    spool = tmp / "spool"
    subprocess.run([*CLI, "--spool", str(spool), "init"], check=True, capture_output=True)
    write_config(spool, status_page={"enabled": False})
    work = tmp / "work"
    subs = {
        "hello": make_submission(work, "hello", {"run": "echo hello"}),
        "big": make_submission(work, "big", {"run": "head -c 100000 /dev/zero | tr '\\0' a"}),
        "judged": make_submission(
            work,
            "judged",
            {
                "run": 'read a b; echo "$((a + b))"',
                "tests": [
                    {"name": "t1", "input": "1 2\n", "output": "3\n"},
                    {"name": "t2", "input": "2 2\n", "output": "5\n"},
                ],
            },
        ),
        "bad": make_submission(work, "bad", {"run": "true", "unknown_key": 1}),
    }
    executor = ExecutorProcess(spool, ["executor", "--concurrency", "2"], tmp / "executor.log")
    try:
        for name, directory in subs.items():
            drop(spool, directory, name)
        wait_done(spool, list(subs), timeout=120)
    finally:
        executor.stop()
    yield spool / "done"


def new_spool(tmp_path: Path) -> SpoolPaths:
    paths = SpoolPaths(tmp_path / "spool")
    paths.init()
    return paths


def land(paths: SpoolPaths, source: Path, name: str, *, finished_at: str | None = None) -> Path:
    """Copies a finished entry in under `name`, committed as the executor does: a rename into done/."""
    staging = paths.tmp / f"land-{name}"
    shutil.copytree(source, staging, symlinks=True)
    if finished_at is not None:
        status_path = staging / "result" / "status.json"
        status = json.loads(status_path.read_text())
        status["states"][status["state"]] = finished_at
        status_path.write_text(json.dumps(status))
    os.rename(staging, paths.submissions.done / name)
    return paths.submissions.done / name


def page(paths: SpoolPaths, name: str) -> Path:
    return paths.status / "s" / f"{name}.html"


def status_json(paths: SpoolPaths) -> dict[str, Any]:
    return json.loads((paths.status / "status.json").read_text())


# -- incremental ------------------------------------------------------------------------------------
def test_only_new_changed_and_removed_entries_are_touched(
    finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(generate, "PAGE_SIZE", 10)
    paths = new_spool(tmp_path)
    for i in range(30):
        land(paths, finished / "hello", f"c{i:03d}", finished_at=f"2030-01-01T00:00:{i:02d}.000Z")
    first = regenerate(paths, PAGE)
    assert (first.rendered, first.done, first.history_rendered) == (30, 30, 3)
    before = {p.name: p.stat().st_mtime_ns for p in (paths.status / "s").iterdir()}

    again = regenerate(paths, PAGE)
    assert (again.rendered, again.removed, again.history_rendered) == (0, 0, 0)
    assert {p.name: p.stat().st_mtime_ns for p in (paths.status / "s").iterdir()} == before

    # One more finishes: its page, a new last history page, and the old last page (its "newer" link).
    land(paths, finished / "judged", "c030", finished_at="2030-01-01T00:01:00.000Z")
    one = regenerate(paths, PAGE)
    assert (one.rendered, one.done, one.history_rendered) == (1, 31, 2)
    land(paths, finished / "hello", "c031", finished_at="2030-01-01T00:01:01.000Z")
    assert regenerate(paths, PAGE).history_rendered == 1  # only the last page now
    assert {p.name: p.stat().st_mtime_ns for p in (paths.status / "s").iterdir() if p.name in before} == before

    # A recommit (renamed away and back, as a worker that died before its commit leaves it) is re-read.
    entry = paths.submissions.done / "c005"
    os.rename(entry, paths.tmp / "c005")
    os.rename(paths.tmp / "c005", entry)
    assert regenerate(paths, PAGE).rendered == 1

    # An entry evicted from done/ loses its page and its place in the counts.
    shutil.rmtree(paths.submissions.done / "c007")
    gone = regenerate(paths, PAGE)
    assert (gone.removed, gone.done) == (1, 31)
    assert not page(paths, "c007").exists()
    assert status_json(paths)["counts"]["finished"] == 31
    history = sorted((paths.status / "history").iterdir())
    # Each history page has its rows for the front page's search next to it (search.py).
    assert [p.name for p in history] == [f"{n}.{ext}" for n in range(1, 5) for ext in ("html", "js")]


def test_an_unchanged_done_directory_is_not_scanned_and_a_new_entry_still_lands(
    finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = new_spool(tmp_path)
    for i in range(5):
        land(paths, finished / "hello", f"e{i}")
    scans: list[Path] = []
    real_scan = generate.scan
    monkeypatch.setattr(generate, "scan", lambda d, known=(): scans.append(d) or real_scan(d, known))
    regenerate(paths, PAGE)
    regenerate(paths, PAGE)
    assert scans.count(paths.submissions.done) == 2  # just changed: its mtime is not trusted yet
    old = time.time() - 60  # injected: the last commit into done/ was a minute ago
    os.utime(paths.submissions.done, (old, old))
    regenerate(paths, PAGE)
    scans.clear()
    assert regenerate(paths, PAGE).rendered == 0
    assert paths.submissions.done not in scans  # settled and unchanged: no scan
    land(paths, finished / "judged", "e5")  # a commit changes the directory: it is seen at once
    assert regenerate(paths, PAGE).rendered == 1
    assert status_json(paths)["counts"]["finished"] == 6


def test_a_lost_or_foreign_index_means_a_full_rebuild(finished: Path, tmp_path: Path) -> None:
    paths = new_spool(tmp_path)
    for name in ("hello", "judged", "bad"):
        land(paths, finished / name, name)
    assert regenerate(paths, PAGE).rendered == 3
    index = json.loads((paths.status / INDEX_NAME).read_text())
    (paths.status / INDEX_NAME).write_text(json.dumps({**index, "render": "other templates"}))
    assert regenerate(paths, PAGE).rendered == 3
    (paths.status / INDEX_NAME).write_bytes(b"\x00garbage")
    assert regenerate(paths, PAGE).rendered == 3
    (paths.status / INDEX_NAME).unlink()
    assert regenerate(paths, PAGE).rendered == 3
    assert regenerate(paths, PAGE, full=True).rendered == 3
    assert regenerate(paths, PAGE).rendered == 0


# -- what the pages show ------------------------------------------------------------------------------
def test_judged_big_and_invalid_entries_are_shown(finished: Path, tmp_path: Path) -> None:
    paths = new_spool(tmp_path)
    for name in ("judged", "big", "bad"):
        land(paths, finished / name, name)
    regenerate(paths, PAGE)
    judged = page(paths, "judged").read_text()
    assert 'data-test="t1"' in judged and 'data-test="t2"' in judged
    assert "wrong answer" in judged and "accepted" in judged
    recent = {r["name"]: r for r in status_json(paths)["recent"]}
    assert recent["judged"]["tests"] == "1/2"
    big = page(paths, "big").read_text()
    assert "a" * 60000 in big and "a" * 70000 not in big  # 64 KiB shown of 100,000 bytes
    assert "more characters not shown" in big
    bad = page(paths, "bad").read_text()
    assert "unknown_key" in bad and "invalid" in bad


def test_broken_result_files_never_stop_the_page(tmp_path: Path) -> None:
    paths = new_spool(tmp_path)
    garbage = paths.submissions.done / "garbage"
    (garbage / "result").mkdir(parents=True)
    (garbage / "result" / "status.json").write_text("{not json")
    (garbage / "result" / "run.json").write_text('["a list, not a stage"]')
    (paths.submissions.done / "empty").mkdir()
    (paths.submissions.done / "stray-file").write_text("not an entry")
    (paths.workers / "junk.json").write_text("[1, 2")
    report = regenerate(paths, PAGE)
    assert report.rendered == 2
    states = {r["name"]: r["state"] for r in status_json(paths)["recent"]}
    assert states == {"garbage": "unknown", "empty": "unknown"}
    assert "garbage" in page(paths, "garbage").read_text()


def test_planted_symlinks_and_fifos_in_an_entry_are_never_followed(finished: Path, tmp_path: Path) -> None:
    """A submitter's directory may bring its own `result/`: the generator runs as root and must not
    read through a symlink (nor block on a FIFO) planted there."""
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "run.json").write_text(json.dumps({"stdout": "TOP-SECRET-1", "status": "ok"}))
    (secret / "status.json").write_text(json.dumps({"state": "done", "outcome": "ok", "message": "TOP-SECRET-2"}))
    paths = new_spool(tmp_path)
    entry = land(paths, finished / "hello", "planted")
    result = entry / "result"
    (result / "run.json").unlink()
    (result / "run.json").symlink_to(secret / "run.json")
    (result / "tests").symlink_to(secret)
    os.mkfifo(result / "compile.json")
    whole = paths.submissions.done / "whole-result-link"
    whole.mkdir()
    (whole / "result").symlink_to(secret)

    started = time.monotonic()
    regenerate(paths, PAGE)
    assert time.monotonic() - started < 30  # a FIFO did not block it
    for name in ("planted", "whole-result-link"):
        html = page(paths, name).read_text()
        assert "TOP-SECRET" not in html
    assert "TOP-SECRET" not in (paths.status / "status.json").read_text()


# -- running submissions -------------------------------------------------------------------------------
def test_live_page_while_running_then_a_redirect_to_the_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = new_spool(tmp_path)
    source = make_submission(tmp_path / "work", "job", {"run": "true"})
    drop(paths.root, source, "job")
    identity = WorkerIdentity.make("executor", "testhost")
    claim = SpoolQueue(paths.submissions, identity, log_name=ATTEMPTS_LOG).claim("job")
    assert claim is not None
    reporter = Reporter(claim, identity)
    reporter.start()
    reporter.transition(State.RUNNING)
    regenerate(paths, PAGE)
    live = paths.status / "live" / "job.html"
    assert 'id="state">running<' in live.read_text()
    assert 'http-equiv="refresh"' in live.read_text()
    assert status_json(paths)["active"][0]["state"] == "running"
    monkeypatch.setattr(generate, "LIVE_RERENDER", 1e9)  # no periodic re-render during this check
    regenerate(paths, PAGE)
    rendered = live.stat().st_mtime_ns
    regenerate(paths, PAGE)
    assert live.stat().st_mtime_ns == rendered  # nothing changed: not rendered again
    reporter.transition(State.TESTING, test="t1")
    regenerate(paths, PAGE)
    assert 'id="state">testing<' in live.read_text()

    reporter.finish(State.DONE, Outcome.OK)
    claim.commit()
    regenerate(paths, PAGE)
    assert 'url=../s/job.html"' in live.read_text()  # people who had it open land on the result
    assert page(paths, "job").exists()
    redirect = live.read_bytes()
    regenerate(paths, PAGE)
    assert live.read_bytes() == redirect
    old = time.time() - generate.LIVE_REDIRECT_KEEP - 60  # injected: the redirect has aged
    os.utime(live, (old, old))
    regenerate(paths, PAGE)
    assert not live.exists()


def test_workers_are_alive_then_stale_on_the_filesystem_clock(tmp_path: Path) -> None:
    paths = new_spool(tmp_path)
    identity = WorkerIdentity.make("executor", "testhost")
    maintenance = Maintenance(paths, SpoolConfig(), identity, "executor", [], {"concurrency": 2})
    maintenance.write_heartbeat([])
    clock = FsClock(paths.tmp, "test")
    regenerate(paths, PAGE, now=clock.now)
    (worker,) = status_json(paths)["workers"]
    assert (worker["worker"], worker["alive"]) == (identity.worker_id, True)
    heartbeat = paths.workers / f"{identity.worker_id}.json"
    old = clock.now() - 120  # injected: the worker was SIGKILLed two minutes ago
    os.utime(heartbeat, (old, old))
    regenerate(paths, PAGE, now=clock.now)
    (worker,) = status_json(paths)["workers"]
    assert worker["alive"] is False and worker["heartbeat_age_seconds"] >= 119
    assert 'class="badge warn">stale<' in (paths.status / "index.html").read_text()


# -- several writers, workers' job, the command ----------------------------------------------------------
def test_two_writers_at_once_leave_a_whole_page(finished: Path, tmp_path: Path) -> None:
    paths = new_spool(tmp_path)
    write_config(paths.root, status_page={"interval": "0.05s"})
    stop = threading.Event()
    torn: list[str] = []

    def read_while_writing() -> None:
        while not stop.is_set():
            try:
                json.loads((paths.status / "status.json").read_bytes())
            except FileNotFoundError:
                pass
            except ValueError as exc:
                torn.append(str(exc))

    def passes_over_all(log: Path) -> int:  # a debug line per regeneration (-vv) says what it saw
        lines = log.read_text(errors="replace").splitlines()
        return sum(1 for line in lines if "status page: Report(" in line and ", done=40," in line)

    reader = threading.Thread(target=read_while_writing)
    reader.start()
    logs = [tmp_path / f"writer-{n}.log" for n in range(2)]
    writers = []
    for log in logs:
        with log.open("wb") as stderr:
            writers.append(
                subprocess.Popen(
                    [*CLI, "--spool", str(paths.root), "-vv", "status-page", "--watch"],
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                )
            )
    try:
        for i in range(40):  # spread over 2 s, so that both writers regenerate while entries land
            land(paths, finished / ("judged" if i % 2 else "hello"), f"r{i:03d}")
            time.sleep(0.05)
        # Both writers keep racing on the final state: each regenerates the whole page twice more.
        wait_until(lambda: all(passes_over_all(log) >= 2 for log in logs), 60, "both writers saw all 40 entries")
    finally:
        for proc in writers:
            proc.terminate()
        for proc in writers:
            proc.wait(timeout=30)
        errors = [log.read_text(errors="replace") for log in logs]
        stop.set()
        reader.join()
    assert torn == []
    assert all("Traceback" not in e for e in errors), errors
    regenerate(paths, PAGE)
    names = {f"r{i:03d}" for i in range(40)}
    assert {p.name[: -len(".html")] for p in (paths.status / "s").iterdir()} == names
    for item in (paths.status / "s").iterdir():
        assert item.read_text().rstrip().endswith("</html>")
    assert status_json(paths)["counts"]["finished"] == 40
    assert not [p for p in paths.status.rglob(".tmp-*")]


def test_the_workers_job_is_throttled_across_workers(tmp_path: Path) -> None:
    paths = new_spool(tmp_path)
    clock = FsClock(paths.tmp, "test")
    config = StatusPageConfig(interval=30.0)
    first = StatusPageJob(paths, config, clock.now, generator="worker-1")
    first()
    first.join(30)
    assert first.runs == 1
    first()  # within its interval: nothing
    second = StatusPageJob(paths, config, clock.now, generator="worker-2")
    second()  # another worker regenerated it moments ago: nothing either
    second.join(30)
    assert (first.runs, second.runs) == (1, 0)
    old = clock.now() - 60
    os.utime(paths.status / "status.json", (old, old))  # injected: the last regeneration was long ago
    third = StatusPageJob(paths, config, clock.now, generator="worker-3")
    third()
    third.join(30)
    assert third.runs == 1 and status_json(paths)["generated_by"] == "worker-3"
    disabled = StatusPageJob(paths, StatusPageConfig(enabled=False), clock.now, generator="worker-4")
    os.utime(paths.status / "status.json", (old, old))
    disabled()
    disabled.join(30)
    assert disabled.runs == 0


def test_a_failing_regeneration_never_reaches_the_worker(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    paths = new_spool(tmp_path)
    shutil.rmtree(paths.status)
    paths.status.write_text("a file where the page's directory should be")  # injected fault
    job = StatusPageJob(paths, PAGE, time.time, generator="worker")
    with caplog.at_level(logging.ERROR):
        job()  # must not raise
        job.join(30)
    assert job.runs == 0
    assert "regeneration failed" in caplog.text


def test_status_page_command(finished: Path, tmp_path: Path) -> None:
    paths = new_spool(tmp_path)
    land(paths, finished / "hello", "one")
    proc = subprocess.run(
        [*CLI, "--spool", str(paths.root), "status-page", "--json"], capture_output=True, text=True, check=True
    )
    report = json.loads(proc.stdout)
    assert (report["rendered"], report["done"]) == (1, 1)
    proc = subprocess.run([*CLI, "--spool", str(paths.root), "status-page", "--full"], capture_output=True, text=True)
    assert proc.returncode == 0 and "1 page(s) rendered" in proc.stdout
    proc = subprocess.run([*CLI, "--spool", str(tmp_path / "nowhere"), "status-page"], capture_output=True, text=True)
    assert proc.returncode != 0 and "is not a spool" in proc.stderr


def test_a_killed_writers_temporaries_are_swept(finished: Path, tmp_path: Path) -> None:
    paths = new_spool(tmp_path)
    regenerate(paths, PAGE)
    old, fresh = paths.status / ".tmp-index.html-dead0001", paths.status / ".tmp-status.json-busy0002"
    old_page = paths.status / "s" / ".tmp-x.html-dead0003"
    for path in (old, fresh, old_page):
        path.write_text("half a page")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    os.utime(old_page, (an_hour_ago, an_hour_ago))
    regenerate(paths, PAGE)
    assert not old.exists() and fresh.exists(), "a stale temporary goes; one being written stays"
    assert old_page.exists(), "page folders are swept by --full only"
    regenerate(paths, PAGE, full=True)
    assert not old_page.exists()


def test_queue_summary_oldest_first_reading_each_arrival_once(tmp_path: Path) -> None:
    from cutor_spool.web_status import live

    incoming = tmp_path / "incoming"
    incoming.mkdir()
    for name in ("b", "a", "c", ".rsync-tmp"):
        (incoming / name).mkdir()
        time.sleep(0.02)
    now = time.time() + 10
    first = live.queue(incoming, now)
    assert (first.length, [name for name, _ in first.first]) == (3, ["b", "a", "c"])
    assert first.oldest_age is not None and 10 <= first.oldest_age < 20
    os.chmod(incoming / "b", 0o750)  # a newer ctime, not read again by this process
    (incoming / "d").mkdir()
    assert [name for name, _ in live.queue(incoming, now).first] == ["b", "a", "c", "d"]
    (incoming / "a").rmdir()
    assert live.queue(incoming, now).length == 3
    assert live.queue(tmp_path / "missing", now) == live.Queue(0, None, [])
