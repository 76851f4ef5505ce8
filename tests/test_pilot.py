"""Pilot workers (`--exit-when-idle`, `--max-jobs`, watcher/pilot.py): real executor processes on
a real spool end by themselves with exit status 0, having finished their work and handed back
nothing; the Pilot's own rules with a clock of the test's."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import ExecutorProcess, drop, hold, make_submission, result, stage, wait_done, wait_until
from nixtest import builders, need_nix, nix_config, spool_roots
from test_builder import ROMAN

from cutor_spool.watcher.pilot import Pilot

__all__ = ["builders", "spool_roots"]  # fixtures, imported for pytest


def exit_code(worker: ExecutorProcess, timeout: float) -> int:
    proc = worker.proc
    assert proc is not None
    wait_until(lambda: proc.poll() is not None, timeout, "the pilot exited")
    return proc.returncode


def heartbeats(spool: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in (spool / "workers").glob("*.json")]


def released(spool: Path) -> list[str]:
    """Entries some worker handed back (the attempts logs of done/ and incoming/)."""
    logs = [*spool.glob("done/*/result/attempts.jsonl"), *spool.glob("incoming/*/result/attempts.jsonl")]
    return [p.parent.parent.name for p in logs for line in p.read_text().splitlines() if '"released"' in line]


def test_pilot_rules_with_a_clock_of_its_own() -> None:
    now = [0.0]
    pilot = Pilot(clock=lambda: now[0])
    assert not pilot.limited and pilot.reserve() and pilot.finished() is None
    pilot.settle(claimed=True)
    now[0] = 1e6
    assert pilot.finished() is None, "without limits a worker never leaves by itself"

    pilot = Pilot(clock=lambda: now[0])
    pilot.configure(exit_when_idle=10.0, max_jobs=2)
    assert pilot.reserve() and pilot.reserve() and not pilot.reserve(), "a third claim is over --max-jobs"
    pilot.settle(claimed=False)  # lost a race: not one of its jobs
    assert not pilot.closed() and pilot.reserve()
    now[0] += 100
    assert pilot.finished() is None, "work still runs"
    pilot.settle(claimed=True)
    assert pilot.finished() is None, "one still runs"
    pilot.settle(claimed=True)
    assert pilot.finished() == "did its 2 job(s) (--max-jobs)"

    idle = Pilot(clock=lambda: now[0])
    idle.configure(exit_when_idle=10.0, max_jobs=None)
    now[0] += 9
    assert idle.reserve()
    now[0] += 30  # a long job is not idleness
    assert idle.finished() is None
    idle.settle(claimed=True)  # the countdown starts when it ends
    now[0] += 9.9
    assert idle.finished() is None
    now[0] += 0.2
    assert idle.finished() is not None
    assert not idle.reserve() and idle.closed(), "once it has decided to leave it claims nothing"
    with pytest.raises(ValueError):
        idle.configure(exit_when_idle=None, max_jobs=0)


def test_exit_when_idle_after_every_submission_is_done(spool: Path, tmp_path: Path, executors: Any) -> None:
    ids = [f"idle-{i}" for i in range(4)]
    for i, entry in enumerate(ids):
        drop(spool, make_submission(tmp_path, entry, {"run": f"echo pilot {i}"}), entry)
    worker = executors(spool, "--concurrency", "2", "--exit-when-idle", "1.5s")
    assert exit_code(worker, 60) == 0, worker.output()
    wait_done(spool, ids, timeout=1)
    for i, entry in enumerate(ids):
        assert (result(spool, entry)["state"], result(spool, entry)["outcome"]) == ("done", "ok")
        assert stage(spool, entry, "run")["stdout"] == f"pilot {i}\n"
    assert not list((spool / "incoming").iterdir()) and not list((spool / "active").iterdir())
    assert heartbeats(spool) == [], "a pilot that left removes its heartbeat, as on SIGTERM"
    assert "--exit-when-idle" in worker.output()


@pytest.mark.slow  # ~6 s: two pilots in turn
def test_max_jobs_takes_exactly_n_and_leaves_the_rest_queued(spool: Path, tmp_path: Path, executors: Any) -> None:
    ids = [f"share-{i}" for i in range(5)]
    for entry in ids:
        drop(spool, make_submission(tmp_path, entry, {"run": "sleep 0.3; echo mine"}), entry)
    worker = executors(spool, "--concurrency", "2", "--max-jobs", "3")
    assert exit_code(worker, 60) == 0, worker.output()
    done = sorted(p.name for p in (spool / "done").iterdir())
    assert len(done) == 3, done
    for entry in done:
        assert result(spool, entry)["outcome"] == "ok" and stage(spool, entry, "run")["stdout"] == "mine\n"
    queued = sorted(p.name for p in (spool / "incoming").iterdir())
    assert sorted(done + queued) == ids and not list((spool / "active").iterdir())
    for entry in queued:  # untouched: what the client dropped, never claimed
        directory = spool / "incoming" / entry
        assert sorted(p.name for p in directory.iterdir()) == [".ready", "submission.yaml"]
        assert (directory / "submission.yaml").read_text() == (tmp_path / entry / "submission.yaml").read_text()
    assert released(spool) == [], "nothing handed back"
    assert heartbeats(spool) == []
    # The rest is anyone's: another pilot takes it.
    other = executors(spool, "--exit-when-idle", "1s")
    assert exit_code(other, 60) == 0, other.output()
    wait_done(spool, ids, timeout=1)


@pytest.mark.slow  # ~8 s: two idle countdowns of 4 s
def test_a_submission_during_the_idle_countdown_resets_it(spool: Path, tmp_path: Path, executors: Any) -> None:
    worker = executors(spool, "--exit-when-idle", "4s")
    beat = wait_until(lambda: heartbeats(spool), 30, "the pilot's first heartbeat")
    assert beat[0]["pilot"] == {"exit_when_idle": 4.0}  # None fields are left out
    started = time.monotonic()  # it started no later than this
    hold(lambda: worker.proc is not None and worker.proc.poll() is None, 2.0, "the pilot left before its time")
    drop(spool, make_submission(tmp_path, "late", {"run": "echo late"}), "late")
    wait_done(spool, "late", timeout=30)
    ended = time.monotonic()
    assert ended - started < 4, "the job ended within the first countdown (else this test proves nothing)"
    # Without the reset it would leave 4 s after it started; it stays 4 s after the job ended.
    hold(lambda: worker.proc is not None and worker.proc.poll() is None, ended + 3 - time.monotonic(), "no reset")
    assert exit_code(worker, 30) == 0, worker.output()
    assert stage(spool, "late", "run")["stdout"] == "late\n"


@pytest.mark.nix
@pytest.mark.slow  # a Nix build (a few seconds with the stand-in channel)
def test_a_builder_pilot_takes_its_one_build_and_leaves(
    spool: Path, tmp_path: Path, executors: Any, builders: Any, spool_roots: None
) -> None:
    need_nix()
    nix_config(spool)
    builder = builders(spool, "--max-jobs", "1")
    worker = executors(spool, "--exit-when-idle", "3s")
    drop(spool, make_submission(tmp_path, "roman", ROMAN), "roman")
    assert exit_code(builder, 120) == 0, builder.output()
    assert "did its 1 job(s) (--max-jobs); leaving" in builder.output()
    assert exit_code(worker, 60) == 0, worker.output()
    assert result(spool, "roman")["outcome"] == "ok", result(spool, "roman")
    assert stage(spool, "roman", "run")["stdout"] == "MCMLXXXVII\n"
    assert stage(spool, "roman", "dependencies")["source"] == "requested"
