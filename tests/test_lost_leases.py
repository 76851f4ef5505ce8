"""Attempts that tell a dead worker from a poison job (watcher/lost.py).

The rule on a real queue: a lease reaped because its worker died (its heartbeat stale or gone)
counts against `max_lost_leases`, not `max_attempts`; one whose worker lived on counts as an
attempt. Then the chaos run with the defaults: 3 real executors on the bubblewrap backend, one
SIGKILLed every 2 s and restarted, 120 one-second jobs and `max_attempts` left alone: every job
ends `done` with its own output, and a job that takes its worker down every time still ends
`error` after the cap, saying so.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import FAST_CONFIG, ExecutorProcess, drop, make_submission, result, stage, wait_done, wait_until

from cutor_spool.atomic import read_lines, write_json
from cutor_spool.config import SpoolConfig
from cutor_spool.layout import SpoolPaths
from cutor_spool.watcher.clock import FsClock
from cutor_spool.watcher.endings import Cause, refusal
from cutor_spool.watcher.lost import WORKER_OOM_SCORE_ADJ
from cutor_spool.watcher.queue import SpoolQueue, WorkerIdentity

LOG = "result/attempts.jsonl"
TIMEOUT = 30.0


def setup_queue(tmp_path: Path) -> tuple[SpoolPaths, FsClock]:
    paths = SpoolPaths(tmp_path / "spool")
    paths.init()
    return paths, FsClock(paths.tmp, "test")


def worker_queue(paths: SpoolPaths, name: str) -> SpoolQueue:
    return SpoolQueue(paths.submissions, WorkerIdentity(name, "host", os.getpid()), log_name=LOG, workers=paths.workers)


def reap_time(clock: FsClock) -> float:
    """When the reaper looks: past the lease's timeout."""
    return clock.now() + TIMEOUT + 1


def beat(paths: SpoolPaths, worker: str, current: list[str], age: float, at: float) -> None:
    """The heartbeat file `worker` last wrote `age` seconds before `at`, holding `current`: a test
    stands in for a worker's maintenance thread, and for its death (a heartbeat that stopped)."""
    path = paths.workers / f"{worker}.json"
    write_json(path, {"worker": worker, "current": [{"id": c, "attempt": 1} for c in current]}, fsync=False)
    os.utime(path, (at - age, at - age))


def claim_and_expire(
    paths: SpoolPaths, clock: FsClock, worker: str, *, age: float | None, others: list[str], listed: bool = True
) -> list[str]:
    """`worker` claims `job`, its heartbeat is `age` old (None: it has none, as a worker that
    stopped and removed it) and lists `others` (and `job` if `listed`), and another worker reaps
    the lease."""
    claim = worker_queue(paths, worker).claim("job")
    assert claim is not None
    at = reap_time(clock)
    if age is not None:
        beat(paths, worker, ["job", *others] if listed else others, age, at)
    return worker_queue(paths, "reaper").reap(at, lease_timeout=TIMEOUT)


def test_a_lease_lost_to_a_dead_worker_is_not_an_attempt_but_a_live_workers_is(tmp_path: Path) -> None:
    paths, clock = setup_queue(tmp_path)
    (paths.submissions.incoming / "job").mkdir()
    config = SpoolConfig()
    # Four workers die holding it (one ran two other jobs beside it, one left no heartbeat, one
    # died before its heartbeat listed the job): four lost leases, no attempt.
    assert claim_and_expire(paths, clock, "w-dead-1", age=TIMEOUT + 1, others=[]) == ["job"]
    assert claim_and_expire(paths, clock, "w-dead-2", age=TIMEOUT + 1, others=["a", "b"]) == ["job"]
    assert claim_and_expire(paths, clock, "w-dead-3", age=None, others=[]) == ["job"]
    assert claim_and_expire(paths, clock, "w-dead-4", age=TIMEOUT + 1, others=["a"], listed=False) == ["job"]
    queue = worker_queue(paths, "w4")
    claim = queue.claim("job")
    assert claim is not None
    assert (claim.attempt, claim.counted_attempts, claim.lost_leases) == (5, 1, 4)
    assert refusal(claim, queue, config.max_attempts, config.max_lost_leases) is None  # it runs again
    expired = [r for r in read_lines(claim.log_path) if r["event"] == "expired"]
    assert [(r["worker"], r["worker_died"], r["others"]) for r in expired] == [
        ("w-dead-1", True, 0),
        ("w-dead-2", True, 2),
        ("w-dead-3", True, None),  # its heartbeat was gone: what else it ran is unknown
        ("w-dead-4", True, None),  # its last heartbeat was written before this claim
    ]
    # w4 lives on (its heartbeat is fresh) but lets the lease expire: that counts as an attempt.
    at = reap_time(clock)
    beat(paths, "w4", ["job"], 0.5, at)
    assert worker_queue(paths, "reaper").reap(at, lease_timeout=TIMEOUT) == ["job"]
    again = worker_queue(paths, "w5").claim("job")
    assert again is not None
    assert (again.attempt, again.counted_attempts, again.lost_leases) == (6, 2, 4)
    last = read_lines(again.log_path)[-2]
    assert (last["event"], last["worker"], last["worker_died"], last["others"]) == ("expired", "w4", False, 0)


def test_past_either_cap_the_claim_is_refused_with_the_reason(tmp_path: Path) -> None:
    paths, clock = setup_queue(tmp_path)
    (paths.submissions.incoming / "job").mkdir()
    for n in range(2):
        assert claim_and_expire(paths, clock, f"w-dead-{n}", age=TIMEOUT + 1, others=[]) == ["job"]
    queue = worker_queue(paths, "w")
    claim = queue.claim("job")
    assert claim is not None and claim.lost_leases == 2
    assert refusal(claim, queue, 3, 3) is None
    ending = refusal(claim, queue, 3, 2)
    assert ending is not None and ending.cause is Cause.LOST_LEASES
    assert ending.reason.startswith("gave up after 2 claims whose worker died while holding it")
    # max_attempts still stops a job the system fails every time, whatever its lost leases.
    assert claim.release("the sandbox failed", counts=True)
    for _ in range(2):
        again = queue.claim("job")
        assert again is not None and again.release("the sandbox failed", counts=True)
    last = queue.claim("job")
    assert last is not None and (last.counted_attempts, last.lost_leases) == (4, 2)
    ending = refusal(last, queue, 3, 10)
    assert ending is not None and ending.cause is Cause.OUT_OF_ATTEMPTS
    assert ending.reason.startswith("gave up after 3 attempt(s)")


def test_a_lease_not_of_the_claim_is_no_evidence_of_a_dead_worker(tmp_path: Path) -> None:
    # A `.lease` the client planted (the claimer died before setting it aside) names whatever
    # worker it likes: its token is not the claim's, so the expiry counts as an attempt.
    paths, clock = setup_queue(tmp_path)
    (paths.submissions.incoming / "job").mkdir()
    claim = worker_queue(paths, "w1").claim("job")
    assert claim is not None
    at = reap_time(clock)
    beat(paths, "w-forged", [], 10 * TIMEOUT, at)
    claim.lease.write_text(json.dumps({"worker": "w-forged", "token": "0" * 16}))
    assert worker_queue(paths, "reaper").reap(at, lease_timeout=TIMEOUT) == ["job"]
    again = worker_queue(paths, "w2").claim("job")
    assert again is not None and (again.counted_attempts, again.lost_leases) == (2, 0)


# -- the chaos run ---------------------------------------------------------------------------
JOBS = 120
UID_BASE, SLOTS = 63000, 16  # its own range: another test's slots are none of its business


class Fleet:
    """The executors of one host, as a supervisor (systemd) would keep them: a killed one is
    started again at once. One lock, so the chaos killer and the poison's stand-in never act on
    the same process at once."""

    def __init__(self, spool: Path, state: Path, logs: Path, count: int) -> None:
        self.spool, self.state, self.logs = spool, state, logs
        self.lock = threading.Lock()
        self.started = 0
        self.members = [self._start() for _ in range(count)]
        self.kills = Counter[str]()

    def _start(self) -> ExecutorProcess:
        self.started += 1
        args = ["executor", "--state-dir", str(self.state)]
        return ExecutorProcess(self.spool, args, self.logs / f"executor-{self.started}.log")

    def kill(self, why: str, *, index: int | None = None, pid: int | None = None) -> bool:
        """SIGKILLs member `index`, or the one whose pid is `pid`, and starts another in its place."""
        with self.lock:
            for i, member in enumerate(self.members):
                if i == index or (pid is not None and member.proc is not None and member.pid == pid):
                    member.kill()
                    self.kills[why] += 1
                    self.members[i] = self._start()
                    return True
        return False

    def stop(self) -> None:
        with self.lock:
            for member in self.members:
                member.stop()


def oom_score_adj(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/oom_score_adj").read_text())
    except (OSError, ValueError):
        return None


def may_lower_oom_score() -> bool:
    """CAP_SYS_RESOURCE in this process's effective set (some containers do not grant it)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        effective = next(int(line.split()[1], 16) for line in fh if line.startswith("CapEff:"))
    return bool(effective >> 24 & 1)


def poison_runner(spool: Path) -> int | None:
    """The pid of the worker that runs the poison job's stage, if one does. The status must be the
    lease's own claim's: the entry carries the killed claim's "running" status into its next claim,
    and a stand-in that acted on it would kill the claim that refuses the poison (past the cap),
    which no job could do."""
    for claim in (spool / "active").glob("poison.*"):
        try:
            status = json.loads((claim / "result" / "status.json").read_text())
            lease = json.loads((claim / ".lease").read_text())
            if status["state"] != "running" or status["attempts"] != lease["attempt"]:
                continue
            return int(lease["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


@pytest.mark.slow  # ~2 min: 120 jobs while a worker is killed every 2 s
@pytest.mark.timeout(600)
def test_chaos_with_the_defaults_ends_every_innocent_job_done_and_the_poison_in_error(
    spool: Path, tmp_path: Path, run_dir: Path
) -> None:
    config = {k: v for k, v in FAST_CONFIG.items() if k != "max_attempts"}  # max_attempts: the default
    config["sandbox"] = {**FAST_CONFIG["sandbox"], "uid_base": UID_BASE, "slots": SLOTS}
    config["status_page"] = {"enabled": False}
    (spool / "spool.yaml").write_text(yaml.safe_dump(config))
    defaults = SpoolConfig()
    ids = [f"job-{i:03d}" for i in range(JOBS)]
    for entry_id in ids:
        sub = {"run": 'sleep 1; echo "out-$ID $(cat /proc/self/oom_score_adj)"', "env": {"ID": entry_id}}
        drop(spool, make_submission(tmp_path / "sources", entry_id, sub), entry_id)
    # Fault injection: the test plays the part of a job that takes its worker down every time it
    # runs (a job cannot reach its worker from inside the sandbox: the hostile suite proves that),
    # by SIGKILLing whichever worker runs the poison's stage as soon as it sees it running.
    drop(spool, make_submission(tmp_path / "sources", "poison", {"run": "sleep 30"}), "poison")
    fleet = Fleet(spool, run_dir, tmp_path, 3)
    stop = threading.Event()

    def chaos() -> None:
        rng = random.Random(12)
        while not stop.wait(2.0):
            fleet.kill("chaos", index=rng.randrange(3))

    def poison() -> None:
        while not stop.wait(0.02):
            pid = poison_runner(spool)
            if pid is not None:
                fleet.kill("poison", pid=pid)

    threads = [threading.Thread(target=chaos, daemon=True), threading.Thread(target=poison, daemon=True)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        wait_done(spool, [*ids, "poison"], timeout=480)
        stop.set()
        for thread in threads:
            thread.join()
        # Each worker is the OOM killer's last choice, where this host lets it lower its score.
        worker_score = WORKER_OOM_SCORE_ADJ if may_lower_oom_score() else oom_score_adj(os.getpid())
        for member in fleet.members:
            what = f"executor {member.pid} at {worker_score}"
            wait_until(lambda m=member: oom_score_adj(m.pid) == worker_score, 30, what)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        fleet.stop()
    wall = time.monotonic() - started

    statuses = {entry_id: result(spool, entry_id) for entry_id in ids}
    failed = {i: s.get("reason") for i, s in statuses.items() if s["state"] != "done"}
    lost = Counter[str]()
    for entry_id in [*ids, "poison"]:
        records = read_lines(spool / "done" / entry_id / LOG)
        lost[entry_id] = sum(1 for r in records if r["event"] == "expired" and r.get("worker_died"))
        assert sum(1 for r in records if r["event"] == "claimed") == result(spool, entry_id)["attempts"]
    innocents = [lost[i] for i in ids]
    print(
        f"\nchaos with the defaults: {JOBS} jobs in {wall:.0f}s, kills {dict(fleet.kills)}, "
        f"{sum(1 for n in innocents if n)} jobs lost a lease ({sum(innocents)} leases, at most {max(innocents)} "
        f"for one job), {len(failed)} not done: {failed}"
    )
    # Every job once in done/, none left anywhere else.
    assert sorted(p.name for p in (spool / "done").iterdir()) == sorted([*ids, "poison"])
    assert list((spool / "active").iterdir()) == [] and list((spool / "incoming").iterdir()) == []
    assert failed == {}
    for entry_id in ids:
        assert statuses[entry_id]["outcome"] == "ok", (entry_id, statuses[entry_id])
        # Its own output, and it ran as the OOM killer's first choice.
        assert stage(spool, entry_id, "run")["stdout"] == f"out-{entry_id} 1000\n"
    # The test proved something: workers died holding innocent jobs, some of them more than once.
    assert fleet.kills["chaos"] >= 10 and sum(innocents) >= 5
    # The poison took a worker down at every claim, up to the cap, and then ended in error.
    status = result(spool, "poison")
    assert status["state"] == "error"
    # Its stage never ran past the cap; a refusing claim's worker may still be hit by the chaos
    # killer, which adds a lost lease after the cap (the next claim refuses it again).
    assert 1 <= fleet.kills["poison"] <= defaults.max_lost_leases <= lost["poison"]
    assert f"gave up after {defaults.max_lost_leases} claims whose worker died" in status["reason"]


@pytest.mark.parametrize("b_lists", ["before", "after"])
def test_two_reapers_at_once_expire_a_lease_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, b_lists: str) -> None:
    """CI saw one dead worker's lease expired twice at the same instant, by two executors' reapers:
    the second found the lease already removed by the first but the entry not yet requeued, and
    logged a second `expired` (had it read the lease a moment earlier, a second death). Reaper A
    is paused between its unlink of the lease and its log line (a fault only a test can time);
    reaper B either listed the entry before A's unlink (the lease it listed is gone: not its to
    expire) or lists it after (the unlink made the entry's ctime fresh: not expired to B)."""
    import cutor_spool.watcher.queue as queue_module

    timeout = 0.2
    paths, clock = setup_queue(tmp_path)
    (paths.submissions.incoming / "job").mkdir()
    assert worker_queue(paths, "w-dead").claim("job") is not None
    lease = next(paths.submissions.active.glob("job.*")) / ".lease"
    os.utime(lease, (clock.now() - 10,) * 2)
    wait_until(lambda: clock.now() - lease.parent.stat().st_ctime > timeout, 10, "the claim older than the timeout")
    beat(paths, "w-dead", ["job"], 10, clock.now())
    b = worker_queue(paths, "reaper-b")
    if b_lists == "before":
        listed = b.leases()
        monkeypatch.setattr(b, "leases", lambda: listed)
    unlinked, go_on = threading.Event(), threading.Event()
    real_append = queue_module.append_line

    def paused_append(path: Path, value: object, **kwargs: object) -> None:
        if threading.current_thread().name == "reaper-a":
            unlinked.set()
            go_on.wait(30)
        real_append(path, value, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(queue_module, "append_line", paused_append)
    results: dict[str, list[str]] = {}
    first = threading.Thread(
        target=lambda: results.update(a=worker_queue(paths, "reaper-a").reap(clock.now(), lease_timeout=timeout)),
        name="reaper-a",
    )
    first.start()
    assert unlinked.wait(30)
    results["b"] = b.reap(clock.now(), lease_timeout=timeout)
    go_on.set()
    first.join(30)
    assert (results["a"], results["b"]) == (["job"], [])
    claim = worker_queue(paths, "w-next").claim("job")
    assert claim is not None and claim.lost_leases == 1
    expired = [r for r in read_lines(claim.log_path) if r["event"] == "expired"]
    assert [(r["by"], r["worker_died"]) for r in expired] == [("reaper-a", True)]
