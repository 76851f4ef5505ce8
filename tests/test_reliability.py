"""The spool's promises under real worker processes: nothing lost, nothing finished twice, a dead
or paused worker's submission finished by another, a poison submission stopped after its attempts."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    CLI,
    LEASE_TIMEOUT,
    drop,
    hold,
    make_submission,
    result,
    stage,
    wait_done,
    wait_until,
    write_config,
)

from cutor_spool.atomic import read_lines
from cutor_spool.runner.slots import processes_of


def active_claim(spool: Path, entry_id: str, timeout: float = 20.0, state: str | None = None) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in (spool / "active").glob(f"{entry_id}.*"):
            status = path / "result" / "status.json"
            if state is None or (status.exists() and json.loads(status.read_text()).get("state") == state):
                return path
        time.sleep(0.02)
    raise AssertionError(f"{entry_id} never became active ({state or 'any state'})")


def attempts_log(spool: Path, entry_id: str) -> list[dict[str, Any]]:
    return read_lines(spool / "done" / entry_id / "result" / "attempts.jsonl")


def heartbeat(spool: Path, worker_id: str) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((spool / "workers" / f"{worker_id}.json").read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data


def test_two_executors_race_over_200_submissions_and_each_finishes_exactly_once(
    spool: Path, tmp_path: Path, executors: Any
) -> None:
    source = make_submission(tmp_path, "echo", {"run": 'printf "%s" "$ID"'})
    a = executors(spool, "--concurrency", "2")
    b = executors(spool, "--concurrency", "2")
    ids = [f"race-{i:03d}" for i in range(200)]
    for entry_id in ids:
        (source / "submission.yaml").write_text(json.dumps({"run": 'printf "%s" "$ID"', "env": {"ID": entry_id}}))
        drop(spool, source, entry_id)
    wait_done(spool, ids, timeout=180)
    assert sorted(p.name for p in (spool / "done").iterdir()) == ids  # no duplicate, none missing
    assert list((spool / "active").iterdir()) == [] and list((spool / "incoming").iterdir()) == []
    workers = set()
    for entry_id in ids:
        status = result(spool, entry_id)
        assert (status["state"], status["outcome"], status["attempts"]) == ("done", "ok", 1), entry_id
        assert stage(spool, entry_id, "run")["stdout"] == entry_id  # every output is its own
        claims = [r for r in attempts_log(spool, entry_id) if r["event"] == "claimed"]
        assert len(claims) == 1
        workers.add(status["worker"])
    assert len(workers) == 2, "both executors should have taken part"
    assert a.proc is not None and a.proc.poll() is None and b.proc is not None and b.proc.poll() is None


@pytest.mark.slow  # ~6 s: waits out a lease
def test_sigkill_mid_stage_is_reclaimed_after_the_lease_and_finished_by_another(
    spool: Path, tmp_path: Path, executors: Any
) -> None:
    drop(spool, make_submission(tmp_path, "slow", {"run": "sleep 2; echo finished"}), "victim")
    doomed = executors(spool)
    claim = active_claim(spool, "victim", state="running")
    doomed_uid = json.loads((claim / "result" / "status.json").read_text())["sandbox_uid"]
    doomed.kill()  # SIGKILL: no chance to hand anything back
    killed_at = time.monotonic()
    time.sleep(0.3)
    assert claim.exists(), "nothing may move the claim before its lease expires"
    executors(spool)
    wait_done(spool, "victim", timeout=60)
    assert time.monotonic() - killed_at >= LEASE_TIMEOUT - 0.5  # never before the lease expired
    status = result(spool, "victim")
    assert (status["state"], status["outcome"], status["attempts"]) == ("done", "ok", 2)
    assert stage(spool, "victim", "run")["stdout"] == "finished\n"
    events = [r["event"] for r in attempts_log(spool, "victim")]
    assert events == ["claimed", "expired", "claimed"]
    # Whatever the killed worker's sandbox held (even one caught half set up) is gone within a few
    # heartbeats of a live executor on the host.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and processes_of(doomed_uid):
        time.sleep(0.1)
    assert processes_of(doomed_uid) == [], "the killed worker's sandbox must not outlive it"


@pytest.mark.slow  # ~7 s: waits out a lease
def test_a_paused_worker_past_its_lease_cannot_commit_or_write_into_the_new_claim(
    spool: Path, tmp_path: Path, executors: Any
) -> None:
    drop(spool, make_submission(tmp_path, "slow", {"run": "sleep 3; echo $$ done"}), "paused")
    sleeper = executors(spool)
    first = active_claim(spool, "paused", state="running")
    sleeper.signal(signal.SIGSTOP)
    try:
        executors(spool)
        second = active_claim(spool, "paused", timeout=30)
        while second == first:
            second = active_claim(spool, "paused", timeout=30)
    finally:
        sleeper.signal(signal.SIGCONT)  # it wakes up holding a claim that is no longer its own
    wait_done(spool, "paused", timeout=60)
    # The resumed worker has tried everything it would (heartbeat, stage, result, commit) once it
    # has let go of the claim: its heartbeat then counts it processed and holds nothing.
    stale_id = f"executor-{os.uname().nodename}-{sleeper.pid}"
    wait_until(
        lambda: (beat := heartbeat(spool, stale_id)) and beat["processed"] >= 1 and beat["current"] == [],
        30,
        "the resumed worker let go of its stale claim",
    )
    status = result(spool, "paused")
    assert (status["state"], status["attempts"]) == ("done", 2)
    assert status["worker"] != stale_id
    events = read_lines(spool / "done" / "paused" / "result" / "events.jsonl")
    expired_at = next(i for i, e in enumerate(events) if e["event"] == "claimed" and e["attempt"] == 2)
    assert all(e["attempt"] == 2 for e in events[expired_at:]), "the stale worker wrote into the new claim"
    assert not first.exists() and not (spool / "done" / "paused.stale").exists()
    assert [p.name for p in (spool / "done").iterdir()] == ["paused"]
    assert "lease" in sleeper.output().lower()
    # The resumed worker carries on with new work.
    drop(spool, make_submission(tmp_path, "after", {"run": "echo after"}), "after")
    wait_done(spool, "after", timeout=30)
    assert sleeper.proc is not None and sleeper.proc.poll() is None


@pytest.mark.slow  # ~10 s: three leases
def test_a_submission_that_kills_its_worker_every_time_ends_in_error_and_the_queue_flows(
    spool: Path, tmp_path: Path, executors: Any
) -> None:
    # Fault injection: the test plays the part of a submission that takes its worker down (a real
    # sandbox escape is what the hostile suite proves impossible), by SIGKILLing whichever worker
    # holds its lease, as often as it is claimed. Its workers die: that counts against
    # max_lost_leases (watcher/lost.py), here 3 to keep the test short.
    write_config(spool, max_lost_leases=3)
    drop(spool, make_submission(tmp_path, "poison", {"run": "sleep 30"}), "poison")
    for i in range(8):
        drop(spool, make_submission(tmp_path, f"ok{i}", {"run": f"echo {i}"}), f"ok-{i}")
    workers = [executors(spool), executors(spool)]
    kills = 0
    deadline = time.monotonic() + 90
    # Three kills, no more: the fourth claim is the one that gives up, and killing its worker in
    # the moment between its lease and its refusal would be a fourth lost lease (CI saw it once).
    while kills < 3 and time.monotonic() < deadline:
        for claim in (spool / "active").glob("poison.*"):
            try:
                owner = json.loads((claim / ".lease").read_text())["pid"]
            except (OSError, ValueError, KeyError):
                continue
            for i, worker in enumerate(workers):
                if worker.proc is not None and worker.pid == owner and kills < 3:
                    worker.kill()
                    kills += 1
                    workers[i] = executors(spool)
        time.sleep(0.05)
    wait_done(spool, ["poison"] + [f"ok-{i}" for i in range(8)], timeout=60)
    status = result(spool, "poison")
    assert status["state"] == "error"
    assert status["reason"].startswith("gave up after 3 claims whose worker died while holding it")
    assert kills == 3
    claims = [r for r in attempts_log(spool, "poison") if r["event"] == "claimed"]
    assert len(claims) == 4  # three that died, and the one that gave up
    expired = [r for r in attempts_log(spool, "poison") if r["event"] == "expired"]
    assert [r["worker_died"] for r in expired] == [True] * 3
    assert {r["others"] for r in expired} <= {0, None}  # alone (None: killed before its heartbeat listed it)
    for i in range(8):
        assert stage(spool, f"ok-{i}", "run")["stdout"] == f"{i}\n"


def test_sigterm_lets_current_work_finish(spool: Path, tmp_path: Path, executors: Any) -> None:
    drop(spool, make_submission(tmp_path, "slow", {"run": "sleep 1; echo finished"}), "graceful")
    worker = executors(spool)
    active_claim(spool, "graceful", state="running")
    worker.signal(signal.SIGTERM)
    assert worker.proc is not None and worker.proc.wait(30) == 0
    status = result(spool, "graceful")
    assert (status["state"], status["outcome"], status["attempts"]) == ("done", "ok", 1)


def settled_threads(pid: int, minimum: int) -> list[int] | None:
    """The ids of `pid`'s threads other than the main one, once the main thread sleeps in a timed
    futex wait (the executor's `stopping.wait(0.5)` loop, reached after every thread started) and
    at least `minimum` others exist, the same ones 0.1 s apart; None until then.

    /proc/PID/task/TID/syscall is "202 uaddr op val timeout ..." while a thread blocks in futex(2)
    (202 on x86_64); a timeout of 0x0 is an untimed wait, as in Thread.start()."""

    def sample() -> tuple[bool, set[int]]:
        fields = Path(f"/proc/{pid}/task/{pid}/syscall").read_text().split()
        waiting = len(fields) > 4 and fields[0] == "202" and fields[4] != "0x0"
        return waiting, {int(tid) for tid in os.listdir(f"/proc/{pid}/task")} - {pid}

    waiting, others = sample()
    if not waiting or len(others) < minimum:
        return None
    time.sleep(0.1)
    still, again = sample()
    return sorted(others) if still and again == others else None


def tgkill(pid: int, tid: int, signum: int) -> None:
    """A signal for one thread of a process: the case where the kernel hands a process's SIGTERM
    to a thread other than the main one (it may, e.g. while the main thread is stopped)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(234, pid, tid, signum) != 0:  # SYS_tgkill on x86_64
        raise OSError(ctypes.get_errno(), "tgkill")


def test_sigterm_received_by_another_thread_still_stops_the_executor(spool: Path, executors: Any) -> None:
    worker = executors(spool, "--concurrency", "2")
    assert worker.proc is not None
    pid = worker.proc.pid
    deadline = time.monotonic() + 20
    while "1 slot" not in worker.log.read_text() and "2 slot" not in worker.log.read_text():
        assert time.monotonic() < deadline, "the executor never started"
        time.sleep(0.05)
    # Its main thread waits for a signal, the others for work: the maintenance thread, the
    # finder's scanner and one thread per slot at least.
    others = wait_until(lambda: settled_threads(pid, 2 + 2), 20, "the executor's threads settled")
    assert others, "the executor should run worker threads"
    tgkill(pid, max(others), signal.SIGTERM)
    assert worker.proc.wait(15) == 0, "SIGTERM handled only once the main thread wakes up"


@pytest.mark.slow  # ~6 s: a 4 s job, run twice
def test_sigterm_past_the_grace_hands_work_back_without_using_an_attempt(
    spool: Path, tmp_path: Path, executors: Any
) -> None:
    drop(spool, make_submission(tmp_path, "slow", {"run": "sleep 4; echo finished"}), "handback")
    worker = executors(spool, "--grace", "0.5")
    active_claim(spool, "handback", state="running")
    worker.signal(signal.SIGTERM)
    assert worker.proc is not None and worker.proc.wait(30) == 0
    assert (spool / "incoming" / "handback").is_dir(), "handed back at once, not left to expire"
    executors(spool)
    wait_done(spool, "handback", timeout=30)
    status = result(spool, "handback")
    assert (status["state"], status["outcome"], status["attempts"]) == ("done", "ok", 2)
    events = [r["event"] for r in attempts_log(spool, "handback")]
    assert events == ["claimed", "released", "claimed"]


@pytest.mark.slow  # ~7 s: waits for the 5 s probe
def test_a_host_that_cannot_run_stages_pauses_instead_of_burning_the_queue(
    spool: Path, tmp_path: Path, run_dir: Path, executors: Any
) -> None:
    """A real fault, injected after the executor started: its state directory's parent loses o+x,
    so bubblewrap (running as the slot uid) can no longer bind the slot's directories and no stage
    can start, whatever the submission, as on a host whose sandbox broke. Without the breaker
    every queued submission failed its 3 attempts within a second and ended `error`. Now a probe
    stage shows the host at fault: the submission goes back uncounted, claiming pauses (the
    heartbeat and the status page say why), and everything runs once the host is repaired."""
    parent = run_dir  # the state directory's parent: the fault is its mode
    # A fault of bubblewrap's (it binds as the slot uid): on a warm slot root attaches the slot's
    # mounts and the job never walks the host's path, so this fault does not reach it.
    write_config(spool, sandbox={"warm_slots": False})
    executor = executors(spool, "--state-dir", str(parent / "state"))
    drop(spool, make_submission(tmp_path, "before", {"run": "echo before"}), "before")
    wait_done(spool, "before")
    assert result(spool, "before")["outcome"] == "ok"

    parent.chmod(0o700)  # the host breaks
    ids = [f"queued-{n}" for n in range(4)]
    for entry_id in ids:
        drop(spool, make_submission(tmp_path, entry_id, {"run": f"echo {entry_id}"}), entry_id)
    heartbeats = spool / "workers"
    deadline = time.monotonic() + 30
    paused: dict[str, Any] = {}
    while time.monotonic() < deadline and not paused:
        for path in heartbeats.glob("*.json"):
            data = json.loads(path.read_text())
            if "sandbox" in data:
                paused = data
        time.sleep(0.1)
    assert paused, executor.output()[-3000:]
    assert paused["sandbox"].startswith("broken, claiming paused:") and "Permission denied" in paused["sandbox"]
    # The claim that found the host broken is handed back first ...
    wait_until(
        lambda: sorted(p.name for p in (spool / "incoming").iterdir()) == ids and not any((spool / "active").iterdir()),
        30,
        "every queued submission back in incoming/",
    )

    # ... and then nothing is claimed, nothing ends. An absence has no event to wait for: it is
    # watched for a fixed 2 s (four claiming loops of a paused executor).
    def untouched() -> bool:
        return not any((spool / "done" / i).exists() for i in ids) and not any((spool / "active").iterdir())

    hold(untouched, 2.0, "a paused executor claimed or finished something")
    assert not any((spool / "done" / i).exists() for i in ids)
    assert sorted(p.name for p in (spool / "incoming").iterdir()) == ids
    page = subprocess.run([*CLI, "--spool", str(spool), "status-page"], capture_output=True, text=True)
    assert page.returncode == 0, page.stderr
    index = (spool / "status" / "index.html").read_text()
    assert "paused</span>" in index and "claiming paused" in index
    machine = json.loads((spool / "status" / "status.json").read_text())
    assert [w["sandbox"] for w in machine["workers"]] == [paused["sandbox"]]
    metrics = (spool / "status" / "metrics.prom").read_text()
    assert f'cutor_spool_worker_paused{{worker="{paused["worker"]}",kind="executor",' in metrics
    paused_series = [ln for ln in metrics.splitlines() if ln.startswith("cutor_spool_worker_paused{")]
    assert len(paused_series) == 1 and paused_series[0].endswith(" 1"), paused_series

    parent.chmod(0o755)  # repaired: the next probe (5 s after the failure) passes
    wait_done(spool, ids, timeout=60)
    for entry_id in ids:
        status = result(spool, entry_id)
        assert (status["state"], status["outcome"]) == ("done", "ok"), status
        assert stage(spool, entry_id, "run")["stdout"] == f"{entry_id}\n"
        log = [r["event"] for r in read_lines(spool / "done" / entry_id / "result" / "attempts.jsonl")]
        # Claims that found the host broken went back uncounted: one counted attempt each.
        assert status["attempts"] == log.count("claimed") and log.count("claimed") - log.count("released") == 1
    records = [r for i in ids for r in read_lines(spool / "done" / i / "result" / "attempts.jsonl")]
    released = [r for r in records if r["event"] == "released"]
    assert len(released) == 1 and released[0]["reason"].startswith("this host cannot run stages")
    assert not [r for r in records if r["event"] == "failed"]
    beat = [json.loads(p.read_text()) for p in heartbeats.glob("*.json")]
    assert beat and all("sandbox" not in b for b in beat)
    assert "claiming resumes" in executor.output()
