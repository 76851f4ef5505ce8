"""The spool protocol itself, on a real directory: claims race, leases expire on the filesystem's
clock, a stale claim can neither write nor commit, readiness waits for `.ready` or quiet."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from cutor_spool.atomic import write_json
from cutor_spool.errors import LeaseLost
from cutor_spool.layout import SpoolPaths
from cutor_spool.watcher.clock import FsClock
from cutor_spool.watcher.queue import SpoolQueue, WorkerIdentity
from cutor_spool.watcher.readiness import seconds_until_ready


def queue(tmp_path: Path, name: str = "w1") -> tuple[SpoolPaths, SpoolQueue]:
    paths = SpoolPaths(tmp_path / "spool")
    paths.init()
    return paths, SpoolQueue(
        paths.submissions, WorkerIdentity(name, "host", os.getpid()), log_name="result/attempts.jsonl"
    )


def entry(paths: SpoolPaths, entry_id: str, ready: bool = True) -> Path:
    path = paths.submissions.incoming / entry_id
    path.mkdir()
    (path / "submission.yaml").write_text("run: echo hi\n")
    if ready:
        (path / ".ready").write_text("")
    return path


def test_exactly_one_of_many_concurrent_claims_wins(tmp_path: Path) -> None:
    paths, _ = queue(tmp_path)
    entry(paths, "contended")
    wins: list[object] = []
    barrier = threading.Barrier(32)

    def contend(i: int) -> None:
        q = SpoolQueue(paths.submissions, WorkerIdentity(f"w{i}", "host", i), log_name="result/attempts.jsonl")
        barrier.wait()
        claim = q.claim("contended")
        if claim is not None:
            wins.append(claim)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert [p.name for p in paths.submissions.active.iterdir()] == [wins[0].path.name]  # type: ignore[attr-defined]
    assert not (paths.submissions.incoming / "contended").exists()


def test_expired_lease_is_requeued_and_the_stale_owner_cannot_write_or_commit(tmp_path: Path) -> None:
    paths, q = queue(tmp_path)
    entry(paths, "job")
    stale = q.claim("job")
    assert stale is not None and stale.attempt == 1
    clock = FsClock(paths.tmp, "test")
    now = clock.now()
    assert q.reap(now, lease_timeout=30) == []  # fresh lease: left alone
    assert q.reap(clock.now() + 100, lease_timeout=30) == ["job"]  # 100 s later, no heartbeat
    assert (paths.submissions.incoming / "job").is_dir()
    # The stale owner learns at its next heartbeat, and its paths are gone for good.
    with pytest.raises(LeaseLost):
        stale.heartbeat()
    fresh = q.claim("job")
    assert fresh is not None and fresh.attempt == 2 and fresh.token != stale.token
    with pytest.raises(LeaseLost):
        write_json(stale.path / "result" / "status.json", {"state": "done"})
    with pytest.raises(LeaseLost):
        stale.commit()
    assert not (fresh.path / "result" / "status.json").exists()
    assert fresh.commit() == paths.submissions.done / "job"
    log = (paths.submissions.done / "job" / "result" / "attempts.jsonl").read_text().splitlines()
    assert [line.split('"event":"')[1].split('"')[0] for line in log] == ["claimed", "expired", "claimed"]


def test_an_owner_that_died_before_writing_its_lease_is_still_reaped(tmp_path: Path) -> None:
    paths, q = queue(tmp_path)
    entry(paths, "early")
    claim = q.claim("early")
    assert claim is not None
    os.unlink(claim.lease)  # as if the worker died between the claiming rename and the lease
    clock = FsClock(paths.tmp, "test")
    assert q.reap(clock.now(), lease_timeout=30) == []  # the entry's ctime stands in: still fresh
    assert q.reap(clock.now() + 60, lease_timeout=30) == ["early"]


def test_release_hands_back_without_counting_an_attempt(tmp_path: Path) -> None:
    paths, q = queue(tmp_path)
    entry(paths, "job")
    claim = q.claim("job")
    assert claim is not None and claim.release("shutdown")
    again = q.claim("job")
    assert again is not None
    assert again.attempt == 2 and again.counted_attempts == 1


def test_commit_onto_an_existing_done_entry_keeps_both(tmp_path: Path) -> None:
    paths, q = queue(tmp_path)
    (paths.submissions.done / "twin" / "result").mkdir(parents=True)
    entry(paths, "twin")
    claim = q.claim("twin")
    assert claim is not None
    target = claim.commit()
    assert target.name.startswith("twin.duplicate-")
    assert (paths.submissions.done / "twin" / "result").is_dir()


def test_misnamed_entries_and_plain_files_are_claimed_under_a_fresh_id(tmp_path: Path) -> None:
    paths, q = queue(tmp_path)
    (paths.submissions.incoming / "not an id").mkdir()
    (paths.submissions.incoming / "stray.txt").write_text("x")
    names = q.scan_incoming()
    assert sorted(names) == ["not an id", "stray.txt"]
    for name in names:
        claim = q.claim(name)
        assert claim is not None
        assert claim.entry_id.startswith("badname-") and claim.original_name == name
    assert list(paths.submissions.incoming.iterdir()) == []


def test_dot_names_are_never_candidates(tmp_path: Path) -> None:
    paths, q = queue(tmp_path)
    (paths.submissions.incoming / ".rsync-tmp.abc").mkdir()
    entry(paths, "visible")
    assert q.scan_incoming() == ["visible"]


def test_readiness_marker_or_settle_time_on_the_filesystem_clock(tmp_path: Path) -> None:
    paths, _ = queue(tmp_path)
    clock = FsClock(paths.tmp, "test")
    marked = entry(paths, "marked", ready=True)
    assert seconds_until_ready(marked, clock.now, settle=5) == 0
    copying = entry(paths, "copying", ready=False)
    wait = seconds_until_ready(copying, clock.now, settle=5)
    assert 4 < wait <= 5
    # cp -a keeps old mtimes, but it cannot keep old ctimes: still not ready.
    old = time.time() - 3600
    os.utime(copying / "submission.yaml", (old, old))
    os.utime(copying, (old, old))
    assert seconds_until_ready(copying, clock.now, settle=5) > 4
    assert seconds_until_ready(copying, lambda: clock.now() + 10, settle=5) == 0


def test_a_closed_waiter_leaves_no_thread_spinning(tmp_path: Path) -> None:
    """Executors open a Waiter for every environment they wait for, and `cutor-spool wait` one per
    call: each must take its inotify thread with it, or the process burns a core per wait."""
    import watchdog.observers.inotify_c  # noqa: F401 - see below

    from cutor_spool.watcher.notify import Waiter

    # watchdog 7.0 starts one shared InotifyFD thread when inotify_c is first imported (idle in
    # poll; 7.1 no longer does): it belongs to the process, not to a Waiter, so count from after it.
    before = set(threading.enumerate())
    for _ in range(3):
        with Waiter([tmp_path]) as waiter:
            (tmp_path / "x").mkdir()
            waiter.wait(1.0)
            (tmp_path / "x").rmdir()
    deadline = time.monotonic() + 5
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not set(threading.enumerate()) - before, "inotify threads outlived their Waiter"
    start = time.process_time()
    time.sleep(0.5)
    assert time.process_time() - start < 0.1, "something in this process spins"


def test_scans_list_oldest_first_and_read_each_arrival_once(tmp_path: Path) -> None:
    paths, q = queue(tmp_path)
    for name in ("b-first", "a-second", "c-third"):
        entry(paths, name)
        time.sleep(0.02)  # distinct ctimes
    assert q.scan_incoming() == ["b-first", "a-second", "c-third"]
    os.chmod(paths.submissions.incoming / "b-first", 0o750)  # a newer ctime, not read again
    entry(paths, "d-fourth")
    assert q.scan_incoming() == ["b-first", "a-second", "c-third", "d-fourth"]
    claim = q.claim("a-second")
    assert claim is not None
    assert q.scan_incoming() == ["b-first", "c-third", "d-fourth"]
    assert claim.release("test")  # back in incoming/, unseen by the last scan: a fresh arrival
    assert q.scan_incoming() == ["b-first", "c-third", "d-fourth", "a-second"]


def test_a_planted_stale_lease_never_gets_a_fresh_claim_reaped(tmp_path: Path) -> None:
    """Between a claim's rename and the claimer setting a planted `.lease` aside, a reaper sees
    the client's file in active/: its old mtime must not make the new claim look expired (found
    by the live fuzz test: a fuzzed tree with a `.lease` was reaped the moment it was claimed)."""
    paths, reaper = queue(tmp_path)
    source = entry(paths, "planted")
    (source / ".lease").write_text("{}")
    an_hour_ago = time.time() - 3600
    os.utime(source / ".lease", (an_hour_ago, an_hour_ago))
    os.utime(source, (an_hour_ago, an_hour_ago))
    os.rename(source, paths.submissions.active / "planted.0123456789abcdef")  # a claim's first step
    assert reaper.reap(time.time(), lease_timeout=60) == []
    assert (paths.submissions.active / "planted.0123456789abcdef").is_dir()


def test_a_planted_future_lease_does_not_keep_a_dead_claim_forever(tmp_path: Path) -> None:
    paths, reaper = queue(tmp_path)
    source = entry(paths, "future")
    (source / ".lease").write_text("{}")
    tomorrow = time.time() + 86400
    os.utime(source / ".lease", (tomorrow, tomorrow))
    os.rename(source, paths.submissions.active / "future.0123456789abcdef")  # its claimer then died
    assert reaper.reap(time.time(), lease_timeout=60) == []
    assert reaper.reap(time.time() + 61, lease_timeout=60) == ["future"]
