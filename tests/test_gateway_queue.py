"""The gateway's queue policy (gateway/admission.py, docs/gateway.md "Waiting, progress and
overload"), through a real uvicorn gateway and real executors: a backlog that an executor works
through waits past the claim timeout and is answered; with no executor the claim timeout still
gives 503 and withdraws the entry; above `--max-queue` a new request is refused with nothing written."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until
from test_gateway import gateways  # noqa: F401 (the fixture)
from test_invoke import built, deploy, server_key  # noqa: F401 (server_key: the fixture)

from cutor_spool.documents.deployment import DeploymentState


def _in_threads(gateway: Any, paths: list[str]) -> tuple[list[threading.Thread], dict[int, tuple[int, Any, bytes]]]:
    answers: dict[int, tuple[int, Any, bytes]] = {}

    def call(i: int) -> None:
        answers[i] = gateway.request("POST", paths[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(paths))]
    for thread in threads:
        thread.start()
    return threads, answers


@pytest.mark.slow
def test_a_backlog_that_moves_waits_past_the_claim_timeout_and_is_answered(
    spool: Path,
    tmp_path: Path,
    server_key: Path,  # noqa: F811
    executors: Any,
    gateways: Any,  # noqa: F811
) -> None:
    executors(spool, "--server-key", str(server_key), "--invocations", "1")
    cid = deploy(spool, tmp_path / "app", {"run": 'sleep 0.4; echo "n=$QUERY_STRING"'})
    assert built(spool, cid).state == DeploymentState.READY
    claim_timeout = 1.5
    gateway = gateways(spool, "--claim-timeout", str(claim_timeout))
    count = 8  # one at a time, >= 0.4 s each: the last waits about 3 s in the queue
    started = time.monotonic()
    threads, answers = _in_threads(gateway, [f"/{cid}/?{i}" for i in range(count)])
    for thread in threads:
        thread.join(120)
    took = time.monotonic() - started
    expected = {i: (200, f"n={i}\n".encode()) for i in range(count)}
    assert {i: (s, body) for i, (s, _, body) in answers.items()} == expected
    assert took > 2 * claim_timeout  # the old rule (claim timeout from the arrival) would have shed some


def test_no_executor_is_still_a_503_and_a_full_queue_refuses_with_nothing_written(
    spool: Path,
    tmp_path: Path,
    server_key: Path,  # noqa: F811
    gateways: Any,  # noqa: F811
) -> None:
    cid = deploy(spool, tmp_path / "app", {"run": "cat"})  # deployed, never built: no executor runs
    gateway = gateways(spool, "--claim-timeout", "3", "--max-queue", "3")
    incoming = spool / "invocations" / "incoming"
    build = os.listdir(incoming)  # the deployment's build entry waits there: 1 of the 3
    threads, answers = _in_threads(gateway, [f"/{cid}/a", f"/{cid}/b"])
    wait_until(lambda: len(os.listdir(incoming)) == 3, 30, "two invocations queued")
    status, answer, data = gateway.request("POST", f"/{cid}/c")
    assert status == 503 and answer["Retry-After"] and "queue is full" in json.loads(data)["error"]
    assert len(os.listdir(incoming)) == 3 and "X-Request-Id" not in answer  # nothing was written for it
    for thread in threads:
        thread.join(60)
    for status, answer, data in answers.values():  # the queue never moved: no-progress 503s, withdrawn
        assert status == 503 and answer["Retry-After"]
        assert "the queue did not move" in json.loads(data)["error"]
    assert os.listdir(incoming) == build and os.listdir(spool / "invocations" / "active") == []
    assert os.listdir(spool / "tmp") == []
