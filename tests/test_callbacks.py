"""Callbacks when a submission ends: a submission's `notify:` URL, POSTed to a real HTTP server on
the loopback, with retries; the operators' command; and what the spool forbids or restricts."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, drop, make_submission, result, wait_done, write_config


class Receiver:
    """A loopback HTTP server that answers `codes` in turn (then 200) and keeps every request."""

    def __init__(self, codes: list[int] | None = None, delay: float = 0.0) -> None:
        self.codes = list(codes or [])
        self.delay = delay
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.got = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.got:
                    code = receiver.codes.pop(0) if receiver.codes else 200
                    delay, receiver.delay = receiver.delay, 0.0
                time.sleep(delay)
                with receiver.got:
                    receiver.requests.append((dict(self.headers), json.loads(body)))
                    receiver.got.notify_all()
                self.send_response(code)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?token=abc"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, n: int, timeout: float = 60) -> None:
        with self.got:
            assert self.got.wait_for(lambda: len(self.requests) >= n, timeout), self.requests


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def notify_record(spool: Path, entry_id: str, timeout: float = 60) -> dict[str, Any]:
    path = spool / "done" / entry_id / "result" / "notify.json"
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return json.loads(path.read_text())


def test_the_url_gets_the_final_status_once(spool: Path, tmp_path: Path, executors: Any, receiver: Receiver) -> None:
    write_config(spool, notify={"urls": True, "allowed_hosts": ["127.0.0.1"], "timeout": "2s"})
    executors(spool)
    drop(spool, make_submission(tmp_path, "j", {"run": "echo hi", "notify": receiver.url}), "called")
    receiver.wait_for(1)
    headers, body = receiver.requests[0]
    assert (body["id"], body["state"], body["outcome"]) == ("called", "done", "ok")
    assert headers["X-Cutor-Spool-Id"] == "called" and headers["Content-Type"] == "application/json"
    record = notify_record(spool, "called")
    assert record["url"]["delivered"] is True and record["url"]["tries"] == 1
    assert not list((spool / "notify").iterdir())  # the outbox is empty: nothing more is to come
    assert len(receiver.requests) == 1


def test_failures_are_retried_with_backoff(spool: Path, tmp_path: Path, executors: Any) -> None:
    flaky = Receiver(codes=[500, 503])
    try:
        write_config(spool, notify={"urls": True, "timeout": "2s", "retries": 3})
        executors(spool)
        drop(spool, make_submission(tmp_path, "j", {"run": "exit 3", "notify": flaky.url}), "retried")
        record = notify_record(spool, "retried")
        assert record["url"] == {"delivered": True, "status": 200, "tries": 3, "errors": ["HTTP 500", "HTTP 503"]}
        assert [b["outcome"] for _h, b in flaky.requests] == ["runtime_error"] * 3  # two refused, one taken
    finally:
        flaky.server.shutdown()


def test_the_spool_forbids_or_restricts_urls(spool: Path, tmp_path: Path, executors: Any, receiver: Receiver) -> None:
    executors(spool)
    drop(spool, make_submission(tmp_path, "a", {"run": "true", "notify": receiver.url}), "forbidden")
    wait_done(spool, "forbidden")
    status = result(spool, "forbidden")
    assert status["state"] == "invalid" and "does not allow notify URLs" in json.dumps(status["errors"])
    proc = subprocess.run(
        [
            *CLI,
            "--spool",
            str(spool),
            "validate",
            str(make_submission(tmp_path, "b", {"run": "true", "notify": "ftp://x"})),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 3 and "notify" in proc.stdout
    assert receiver.requests == []


def test_the_operators_command_runs_for_every_ending(spool: Path, tmp_path: Path, executors: Any) -> None:
    log = tmp_path / "hook.log"
    log.touch()
    log.chmod(0o666)
    write_config(
        spool,
        notify={
            "command": f'printf "%s %s " "$CUTOR_SPOOL_ID" "$CUTOR_SPOOL_OUTCOME" >> {log}; cat >> {log}; echo >> {log}'
        },
    )
    executors(spool)
    drop(spool, make_submission(tmp_path, "a", {"run": "echo x"}), "hooked")
    record = notify_record(spool, "hooked")
    assert record["command"]["exit_code"] == 0
    line = log.read_text().strip()
    assert line.startswith("hooked ok {") and json.loads(line.split(" ", 2)[2])["state"] == "done"


def test_a_dead_senders_callback_is_sent_by_another_worker(
    spool: Path, tmp_path: Path, executors: Any, receiver: Receiver
) -> None:
    """A sender killed mid-way leaves `notify/.sending-<id>-<worker>`; after the lease timeout a
    worker's maintenance puts it back and sends it (the fault is injected by writing the file a
    dead sender leaves: killing a worker exactly between its rename and its POST cannot be timed)."""
    write_config(spool, notify={"urls": True})
    (spool / "done" / "orphan" / "result").mkdir(parents=True)
    (spool / "done" / "orphan" / "result" / "status.json").write_text(
        json.dumps({"id": "orphan", "state": "done", "outcome": "ok"})
    )
    (spool / "notify").mkdir(exist_ok=True)
    left = spool / "notify" / ".sending-orphan-deadworker"
    left.write_text(json.dumps({"id": "orphan", "url": receiver.url}))
    old = time.time() - 3600
    os.utime(left, (old, old))
    executors(spool)
    receiver.wait_for(1)
    assert receiver.requests[0][1]["id"] == "orphan"
    assert notify_record(spool, "orphan")["url"]["delivered"] is True
