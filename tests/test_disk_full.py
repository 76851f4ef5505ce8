"""A spool on a small filesystem that fills up: writes fail cleanly, no status.json is ever
half-written or wrong, no submission is lost, and work resumes when space returns."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, make_submission, result, stage, wait_done, write_config

from cutor_spool.documents.states import State

STATES = {s.value for s in State}


@pytest.fixture
def small_spool(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "fs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], check=True)
    try:
        spool = mount / "spool"
        subprocess.run([*CLI, "--spool", str(spool), "init"], check=True, capture_output=True)
        write_config(spool, status_page={"enabled": False})
        yield spool
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path) -> None:
    """Takes every free block of the filesystem."""
    with open(path, "wb") as fh:
        chunk = b"\0" * 65536
        try:
            while True:
                fh.write(chunk)
                fh.flush()
        except OSError:
            pass
    # And the last crumbs, a byte at a time, so that even a tiny write fails.
    with open(path, "ab", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 512)
        except OSError:
            pass


class StatusReader(threading.Thread):
    """Reads every status.json it can find, all the time, and records anything a client would
    choke on: unparsable JSON, or a state that does not exist."""

    def __init__(self, spool: Path) -> None:
        super().__init__(daemon=True)
        self.spool, self.stop, self.bad, self.reads = spool, threading.Event(), [], 0

    def run(self) -> None:
        while not self.stop.is_set():
            for status in [
                *self.spool.glob("active/*/result/status.json"),
                *self.spool.glob("done/*/result/status.json"),
            ]:
                try:
                    data = status.read_bytes()
                except OSError:
                    continue  # moved between listing and reading: fine
                self.reads += 1
                try:
                    state = json.loads(data)["state"]
                except (ValueError, KeyError) as exc:
                    self.bad.append(f"{status}: {exc}: {data[:80]!r}")
                    continue
                if state not in STATES:
                    self.bad.append(f"{status}: state {state!r}")
            time.sleep(0.01)


# ~8 s, yet not slow: the module's one test keeps it in the quick tier.
def test_a_full_spool_fails_cleanly_loses_nothing_and_resumes(
    small_spool: Path, tmp_path: Path, executors: Any
) -> None:
    spool = small_spool
    ids = [f"full-{i:02d}" for i in range(12)]
    for entry_id in ids:  # staged while there is room; renamed in once the disk is full
        source = make_submission(tmp_path, entry_id, {"run": f"echo {entry_id}"})
        staging = spool / "tmp" / entry_id
        shutil.copytree(source, staging)
        (staging / ".ready").write_text("")
    worker = executors(spool, "--concurrency", "2")
    reader = StatusReader(spool)
    reader.start()
    filler = spool / "tmp" / "filler"
    fill(filler)
    for entry_id in ids[:6]:
        os.rename(spool / "tmp" / entry_id, spool / "incoming" / entry_id)
    time.sleep(4)  # a few lease timeouts of failing claims, heartbeats and reaps
    # Nothing can be finished without room for its results, and nothing has gone missing.
    assert list((spool / "done").iterdir()) == []
    present = {p.name.partition(".")[0] for p in [*(spool / "incoming").iterdir(), *(spool / "active").iterdir()]}
    assert set(ids[:6]) <= present, present
    for entry_id in ids[6:]:
        os.rename(spool / "tmp" / entry_id, spool / "incoming" / entry_id)
    time.sleep(2)
    assert worker.proc is not None and worker.proc.poll() is None, "the worker died of a full disk"
    os.unlink(filler)  # space returns
    wait_done(spool, ids, timeout=90)
    reader.stop.set()
    reader.join()
    assert reader.bad == [], reader.bad[:5]
    assert reader.reads > 0
    assert sorted(p.name for p in (spool / "done").iterdir()) == ids  # none lost, none twice
    for entry_id in ids:
        status = result(spool, entry_id)
        assert (status["state"], status["outcome"]) == ("done", "ok"), (entry_id, status)
        assert stage(spool, entry_id, "run")["stdout"] == f"{entry_id}\n"
    assert list((spool / "active").iterdir()) == [] and list((spool / "incoming").iterdir()) == []
    assert "No space left on device" in worker.output() or "ENOSPC" in worker.output()
