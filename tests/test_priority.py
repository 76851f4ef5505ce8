"""Priority lanes: higher lanes are claimed first, lower ones are not starved, and a backlog of
10,000 low-priority submissions does not hold a new high-priority one behind more than the stage
already running."""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, make_submission, write_config

from cutor_spool.layout import SpoolPaths
from cutor_spool.watcher.finder import Finder
from cutor_spool.watcher.priority import FAIR_EVERY, marker_priority
from cutor_spool.watcher.queue import SpoolQueue, WorkerIdentity


def finder(tmp_path: Path, lanes: dict[str, int]) -> Finder:
    paths = SpoolPaths(tmp_path / "spool")
    paths.init()
    queue = SpoolQueue(paths.submissions, WorkerIdentity.make("test"), log_name="attempts.jsonl")
    return Finder(queue, poll=True, interval=60, priority=lambda name: lanes.get(name, 0))


def take_all(f: Finder) -> list[str]:
    out = []
    while (name := f.take(0)) is not None:
        out.append(name)
    return out


def test_higher_lanes_first_oldest_first_within_a_lane(tmp_path: Path) -> None:
    lanes = {"h1": 10, "h2": 10, "n1": 0, "l1": -10, "top": 100}
    f = finder(tmp_path, lanes)
    f.offer(["l1", "n1", "h1", "h2", "top"])
    assert take_all(f) == ["top", "h1", "h2", "n1", "l1"]


def test_lower_lanes_are_not_starved(tmp_path: Path) -> None:
    """With high-priority work arriving all the time, every FAIR_EVERY+1-th claim is the
    longest-waiting entry of any lane."""
    lanes = {f"h{i}": 10 for i in range(40)} | {"low": -10}
    f = finder(tmp_path, lanes)
    f.offer(["low"])
    taken = []
    for i in range(40):
        f.offer([f"h{i}"])
        taken.append(f.take(0))
    assert taken.index("low") == FAIR_EVERY  # passed over FAIR_EVERY times, never more


def test_a_backlog_alone_builds_no_debt(tmp_path: Path) -> None:
    lanes = {f"l{i}": -10 for i in range(20)} | {"urgent": 10}
    f = finder(tmp_path, lanes)
    f.offer([f"l{i}" for i in range(20)])
    assert [f.take(0) for _ in range(10)] == [f"l{i}" for i in range(10)]
    f.offer(["urgent"])
    assert f.take(0) == "urgent"  # the very next claim


def test_the_marker_names_the_lane_capped_by_the_spool(tmp_path: Path) -> None:
    entry = tmp_path / "e"
    entry.mkdir()
    assert marker_priority(entry, 10) == 0  # no marker: normal
    for text, cap, lane in (
        ("", 10, 0),
        ('{"priority": "low"}', 10, -10),
        ('{"priority": 50}', 10, 10),
        ("junk", 10, 0),
    ):
        (entry / ".ready").write_text(text)
        assert marker_priority(entry, cap) == lane, text


def test_submit_carries_the_lane_and_the_spool_caps_what_may_be_asked(spool: Path, tmp_path: Path) -> None:
    write_config(spool, max_priority="normal")
    high = make_submission(tmp_path, "high", {"run": "true", "priority": "high"})
    low = make_submission(tmp_path, "low", {"run": "true", "priority": "low"})
    proc = subprocess.run([*CLI, "--spool", str(spool), "submit", str(high)], capture_output=True, text=True)
    assert proc.returncode == 3 and "above this spool's max_priority" in proc.stderr
    proc = subprocess.run([*CLI, "--spool", str(spool), "submit", str(low), "--id", "low"], capture_output=True)
    assert proc.returncode == 0
    assert json.loads((spool / "incoming" / "low" / ".ready").read_text())["priority"] == -10


def stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# A claim already under way when the urgent one is dropped, before the executor has seen it
# (inotify, then its finder's next look), may still land after the drop: seen 1 ms after it. A
# backlog that held the urgent one would claim past this, stage after stage (10 ms or more each).
SEEN = 0.005


@pytest.mark.slow
def test_a_low_backlog_of_10000_does_not_hold_a_new_high_one(spool: Path, tmp_path: Path, executors: Any) -> None:
    marker = json.dumps({"at": 0, "priority": -10})
    for i in range(10_000):  # the atomic drop `submit` makes, without 10,000 processes
        staging = spool / "tmp" / f"b{i}"
        staging.mkdir()
        (staging / "submission.yaml").write_text("run: 'true'\npriority: low\n")
        (staging / ".ready").write_text(marker)
        os.rename(staging, spool / "incoming" / f"backlog-{i:05d}")
    executors(spool)
    deadline = time.monotonic() + 120
    while len(os.listdir(spool / "done")) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    staging = spool / "tmp" / "urgent"
    staging.mkdir()
    (staging / "submission.yaml").write_text("run: echo urgent\npriority: high\n")
    (staging / ".ready").write_text(json.dumps({"at": 0, "priority": "high"}))
    dropped = time.time()
    os.rename(staging, spool / "incoming" / "urgent")
    proc = subprocess.run(
        [*CLI, "--spool", str(spool), "wait", "urgent", "--json", "--timeout", "120"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    claimed = stamp(json.loads(proc.stdout)["states"]["claimed"])
    overtook = []
    for name in os.listdir(spool / "done"):
        if name.startswith("backlog-"):
            states = json.loads((spool / "done" / name / "result" / "status.json").read_text())["states"]
            if dropped + SEEN < stamp(states["claimed"]) < claimed:
                overtook.append(name)
    assert overtook == []  # only the stages running or being claimed when it was dropped came before it
    assert len(os.listdir(spool / "incoming")) > 9000  # the backlog was still there
