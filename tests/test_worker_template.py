"""The generic worker (watcher/worker.py) as a template: a third queue is a subclass and a folder
under the spool, and gets the protocol's rules for free (misnamed and duplicate entries, retry then
error); a programming error in a worker is counted apart (heartbeat, metrics.prom) and, in strict
mode, stops the worker instead of passing for a failure of the system."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, drop, make_submission, result, wait_done

from cutor_spool.atomic import read_lines, write_json
from cutor_spool.errors import SystemFailure
from cutor_spool.layout import QueueKind
from cutor_spool.runner.executor import Executor
from cutor_spool.runner.pipeline import Pipeline
from cutor_spool.watcher.claim import Claim
from cutor_spool.watcher.endings import Ending
from cutor_spool.watcher.maintenance import Active
from cutor_spool.watcher.worker import QueueWorker


class Echoer(QueueWorker[None]):
    """A whole third queue: `echoes/` under the spool. Each entry's say.txt is echoed into its
    result.json; "fail" is a system failure."""

    kind = "echoer"
    queue_kind = QueueKind("echoes", attempts_log="attempts.jsonl")

    def setup(self) -> None:
        pass

    def describe(self) -> str:
        return "echoes"

    def begin(self, claim: Claim, active: Active) -> None:
        return None

    def handle(self, claim: Claim, job: None, active: Active) -> None:
        said = (claim.path / "say.txt").read_text()
        if said == "fail":
            raise SystemFailure("the echo chamber is down")
        write_json(claim.path / "result.json", {"state": "done", "echo": said})
        claim.commit()

    def finish(self, claim: Claim, job: None, ending: Ending) -> None:
        write_json(claim.path / "result.json", {"state": str(ending.state), **ending.fields})
        claim.commit(ending.name)


@contextmanager
def running(worker: QueueWorker[Any]) -> Iterator[QueueWorker[Any]]:
    """The worker's `run` on a thread for the duration, stopped afterwards."""
    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(timeout=30)


def until(condition: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not true after {timeout}s")


def echo(spool: Path, name: str, said: str) -> None:
    staging = spool / "tmp" / f"echo-{name}"
    staging.mkdir()
    (staging / "say.txt").write_text(said)
    (staging / ".ready").write_text("")
    os.rename(staging, spool / "echoes" / "incoming" / name)


def echoed(spool: Path, name: str) -> dict[str, Any]:
    path = until(lambda: next((spool / "echoes" / "done").glob(f"{name}/result.json"), None))
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_a_third_queue_is_a_subclass_and_a_folder(spool: Path) -> None:
    with running(Echoer(spool, concurrency=1, poll=True, host="testhost", grace=5.0, config=None)):
        echo(spool, "hello", "hi")
        assert echoed(spool, "hello") == {"state": "done", "echo": "hi"}
        echo(spool, "hello", "again")  # the id is done: kept under a distinct name, not run
        duplicate = echoed(spool, "hello.duplicate-*")
        assert duplicate["state"] == "invalid" and duplicate["duplicate_of"] == "hello"
        assert "is already active or done" in duplicate["errors"][0]["message"]
        echo(spool, "not.an.id", "x")
        misnamed = echoed(spool, "badname-*")
        assert misnamed["state"] == "invalid" and misnamed["original_name"] == "not.an.id"
        echo(spool, "doomed", "fail")  # retry, then error: max_attempts is 3
        doomed = echoed(spool, "doomed")
        assert doomed == {"state": "error", "reason": "attempt 3: the echo chamber is down"}
    events = [r["event"] for r in read_lines(spool / "echoes" / "done" / "doomed" / "attempts.jsonl")]
    assert events == ["claimed", "failed", "claimed", "failed", "claimed"]


def broken_process(self: Pipeline, entry: Path, reporter: Any, cancel: Any) -> None:
    raise KeyError("injected")


def heartbeat(spool: Path, worker: QueueWorker[Any]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((spool / "workers" / f"{worker.identity.worker_id}.json").read_text())
    return data


def test_a_programming_error_is_counted_apart_and_retried_in_production(
    spool: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug that only a patched function can make: the pipeline raises KeyError for every
    submission. Without strict mode the worker survives it, the submission is retried as after a
    system failure, claiming is not paused, and the heartbeat and metrics.prom count it."""
    monkeypatch.setenv("CUTOR_SPOOL_STRICT", "0")
    monkeypatch.setattr(Pipeline, "process", broken_process)
    # The host's state directory, as every executor here: its sweep at start then leaves alone the
    # stage cgroups of the slots that other executors hold (a state directory of its own would not).
    worker = Executor(spool, host="testhost", grace=5.0)
    with running(worker):
        drop(spool, make_submission(tmp_path, "s", {"run": "echo never"}), "job")
        wait_done(spool, "job")
        status = result(spool, "job")
        assert (status["state"], status["reason"]) == ("error", "attempt 3: unexpected KeyError: 'injected'")
        beat = until(lambda: (b := heartbeat(spool, worker))["unexpected_errors"] == 3 and b)
        assert beat["last_unexpected_error"]["type"] == "KeyError"
        assert beat["last_unexpected_error"]["message"] == "'injected'"
        assert "sandbox" not in beat  # not taken for a broken host
        subprocess.run([*CLI, "--spool", str(spool), "status-page"], check=True, capture_output=True)
    parser = pytest.importorskip("prometheus_client.parser")
    text = (spool / "status" / "metrics.prom").read_text()
    families = {f.name: f for f in parser.text_string_to_metric_families(text)}
    samples = families["cutor_spool_worker_unexpected_errors"].samples
    assert [(s.name, s.labels["worker"], s.value) for s in samples] == [
        ("cutor_spool_worker_unexpected_errors_total", worker.identity.worker_id, 3)
    ]


def test_in_strict_mode_a_programming_error_stops_the_worker_and_is_re_raised(
    spool: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same injected bug (a patched function) under CUTOR_SPOOL_STRICT=1, as tests run: `run`
    raises it, and the submission goes back to the queue with no attempt burnt."""
    monkeypatch.setenv("CUTOR_SPOOL_STRICT", "1")
    monkeypatch.setattr(Pipeline, "process", broken_process)
    worker = Executor(spool, host="testhost", grace=5.0)
    drop(spool, make_submission(tmp_path, "s", {"run": "echo never"}), "job")
    safety = threading.Timer(60, worker.stop)  # if the bug were swallowed, run() would not return
    safety.start()
    try:
        with pytest.raises(KeyError, match="injected"):
            worker.run(install_signals=False)
    finally:
        safety.cancel()
    assert worker.maintenance.info["unexpected_errors"] == 1
    events = [r["event"] for r in read_lines(spool / "incoming" / "job" / "result" / "attempts.jsonl")]
    assert events == ["claimed", "released"]
