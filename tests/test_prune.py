"""Retention: `cutor-spool prune` and spool.yaml's `retention:`, with real executors. Ages are
made by setting a finished entry's status.json mtime back (what time passing does to it)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, drop, make_submission, wait_done, write_config


def cli(spool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "--spool", str(spool), *args], capture_output=True, text=True, timeout=120)


def age(spool: Path, entry_id: str, seconds: float) -> None:
    status = spool / "done" / entry_id / "result" / "status.json"
    then = time.time() - seconds
    os.utime(status, (then, then))


def test_prune_removes_what_ended_long_ago_and_keeps_the_rest(spool: Path, tmp_path: Path, executors: Any) -> None:
    executors(spool, "--concurrency", "2")
    jobs = {"old-ok": "echo fine", "old-bad": "exit 2", "new-ok": "echo fine"}
    for entry_id, run in jobs.items():
        drop(spool, make_submission(tmp_path, entry_id, {"run": run}), entry_id)
    wait_done(spool, list(jobs))
    age(spool, "old-ok", 3 * 86400)
    age(spool, "old-bad", 3 * 86400)
    assert cli(spool, "status-page").returncode == 0
    assert (spool / "status" / "s" / "old-ok.html").exists()

    dry = json.loads(cli(spool, "prune", "--older-than", "2d", "--dry-run", "--json").stdout)
    assert sorted(dry["removed"]) == ["old-bad", "old-ok"] and dry["bytes"] > 0
    assert sorted(p.name for p in (spool / "done").iterdir()) == ["new-ok", "old-bad", "old-ok"]

    kept = json.loads(cli(spool, "prune", "--older-than", "2d", "--keep-failed", "--json").stdout)
    assert (kept["removed"], kept["kept_failed"]) == (["old-ok"], 1)
    assert sorted(p.name for p in (spool / "done").iterdir()) == ["new-ok", "old-bad"]
    assert not (spool / "status" / "s" / "old-ok.html").exists()  # the page follows
    assert "old-ok" not in (spool / "status" / "index.html").read_text()

    proc = cli(spool, "prune", "--older-than", "2d")
    assert proc.returncode == 0 and "removed 1 finished submission(s)" in proc.stdout
    assert [p.name for p in (spool / "done").iterdir()] == ["new-ok"]
    assert not [p for p in (spool / "tmp").iterdir() if p.name.startswith(".pruned-")]
    assert cli(spool, "prune", "--older-than", "soon").returncode == 2


@pytest.mark.slow
def test_prune_racing_with_executors_loses_nothing_unfinished(spool: Path, tmp_path: Path, executors: Any) -> None:
    """Three executors work through 60 jobs while two pruners remove everything finished, as
    fast as they can: every job ends exactly once, and each is either still in done/ or removed by
    exactly one pruner after it ended; nothing is left in incoming/ or active/."""
    for _ in range(3):
        executors(spool, "--concurrency", "2")
    ids = [f"job-{i:02d}" for i in range(60)]
    for entry_id in ids:
        drop(spool, make_submission(tmp_path, entry_id, {"run": f"echo {entry_id}"}), entry_id)
    removed: list[list[str]] = [[], []]
    stop = threading.Event()

    def pruner(n: int) -> None:
        while not stop.is_set():
            proc = cli(spool, "prune", "--older-than", "0s", "--json")
            assert proc.returncode == 0, proc.stderr
            removed[n] += json.loads(proc.stdout)["removed"]

    threads = [threading.Thread(target=pruner, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while (any((spool / "incoming").iterdir()) or any((spool / "active").iterdir())) and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join()
    assert not any((spool / "incoming").iterdir()) and not any((spool / "active").iterdir())
    left = {p.name for p in (spool / "done").iterdir()}
    assert not set(removed[0]) & set(removed[1])  # one rename wins
    assert sorted(left | set(removed[0]) | set(removed[1])) == ids
    for entry_id in left:
        status = json.loads((spool / "done" / entry_id / "result" / "status.json").read_text())
        assert (status["state"], status["outcome"]) == ("done", "ok")


def test_workers_apply_the_spools_retention(spool: Path, tmp_path: Path, executors: Any) -> None:
    write_config(spool, retention={"older_than": "1s", "interval": "200ms"})
    executors(spool)
    drop(spool, make_submission(tmp_path, "short-lived", {"run": "echo bye"}), "short-lived")
    wait_done(spool, "short-lived")
    deadline = time.monotonic() + 30
    while (spool / "done" / "short-lived").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not (spool / "done" / "short-lived").exists()
