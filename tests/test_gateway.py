"""`cutor-spool gateway`: a real uvicorn server on the loopback, real executor processes and
bubblewrap. What an HTTP client sees: the program's status, headers and body bytes, the
deployment's description without its secrets, every refusal's status (and nothing left in the
spool by a refused request), 503 when no executor takes it (and it never runs later), 504 for a
program out of time, one run per Idempotency-Key, many requests at once, and the metrics."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, ExecutorProcess, wait_until, write_config
from prometheus_client.parser import text_string_to_metric_families
from test_invoke import built, deploy, server_key  # noqa: F401 (server_key: the fixture)

from cutor_spool.deployments import idempotency
from cutor_spool.deployments.store import Store
from cutor_spool.documents.deployment import DeploymentState
from cutor_spool.documents.states import State
from cutor_spool.documents.status import Problem, StatusDocument
from cutor_spool.gateway.answers import answer_of
from cutor_spool.gateway.server import bind
from cutor_spool.layout import SpoolPaths

SECRET = "s3cr3t-gateway-7a6b5c4d"
ECHO = """\
printf 'Status: 201 Created\\r\\nContent-Type: text/plain\\r\\nX-Method: %s\\r\\nConnection: close\\r\\n\\r\\n' \
  "$REQUEST_METHOD"
echo "path=$PATH_INFO query=$QUERY_STRING type=$CONTENT_TYPE length=$CONTENT_LENGTH agent=$HTTP_X_AGENT"
printf %s "$TOKEN" | sha256sum | cut -d' ' -f1
cat
"""


class Gateway:
    def __init__(self, spool: Path, log: Path, *args: str) -> None:
        self.process = ExecutorProcess(spool, ["gateway", "--listen", "127.0.0.1:0", *args], log)
        found = wait_until(
            lambda: re.search(r"listening on http://127\.0\.0\.1:(\d+)", self.process.output()), 30, "the gateway"
        )
        self.port = int(found.group(1))
        wait_until(self._healthy, 30, "/healthz")

    def _healthy(self) -> bool:
        try:
            return self.request("GET", "/healthz")[0] == 200
        except OSError:
            return False

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None, timeout: float = 90
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body or None, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.headers, response.read()
        finally:
            connection.close()

    def json(self, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        status, _, body = self.request(method, path, **kwargs)
        return status, json.loads(body)


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[Any]:
    started: list[Gateway] = []

    def start(spool: Path, *args: str) -> Gateway:
        gateway = Gateway(spool, tmp_path / f"gateway-{len(started)}.log", *args)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        assert gateway.process.stop() == 0, gateway.process.output()  # SIGTERM: a clean, graceful stop


def _entries(spool: Path) -> dict[str, list[str]]:
    queue = spool / "invocations"
    return {name: sorted(os.listdir(queue / name)) for name in ("incoming", "active", "done")}


@pytest.mark.slow
def test_a_request_reaches_the_program_and_its_answer_comes_back(
    spool: Path,
    tmp_path: Path,
    server_key: Path,  # noqa: F811 (the fixture imported above)
    executors: Any,
    gateways: Any,
) -> None:
    executors(spool, "--server-key", str(server_key))
    cid = deploy(spool, tmp_path / "app", {"run": {"file": "run.sh"}, "env": {"TOKEN": SECRET}}, {"run.sh": ECHO})
    assert built(spool, cid).state == DeploymentState.READY
    gateway = gateways(spool)

    body = b"the body \x00\xff bytes"
    headers = {"Content-Type": "application/octet-stream", "X-Agent": "tester"}
    status, answer, data = gateway.request("PUT", f"/{cid}/items/7?a=1&b=2", body, headers)
    assert status == 201
    assert answer["Content-Type"] == "text/plain" and answer["X-Method"] == "PUT"
    assert answer["Connection"] != "close"  # a hop-by-hop field of the program's is not passed on
    token = hashlib.sha256(SECRET.encode()).hexdigest()
    assert data == (
        f"path=/items/7 query=a=1&b=2 type=application/octet-stream length={len(body)} agent=tester\n".encode()
        + token.encode()
        + b"\n"
        + body
    )
    entry = answer["X-Request-Id"]
    assert (
        json.loads((spool / "invocations" / "done" / entry / "result" / "status.json").read_text())["state"] == "done"
    )

    # POST /{cid} is PATH_INFO "" (the path as sent, which a payer signs); PATH_INFO is not decoded;
    # GET /{cid} describes it, without its secret.
    status, _, data = gateway.request("POST", f"/{cid}", b"")
    assert status == 201 and data.startswith(b"path= query= type= length= agent=\n")
    status, _, data = gateway.request("POST", f"/{cid}/a%2Fb", b"")
    assert status == 201 and data.startswith(b"path=/a%2Fb query= type= length= agent=\n")
    status, described = gateway.json("GET", f"/{cid}")
    assert status == 200
    assert described["cid"] == cid and described["sealed_env"] is True and described["build"]["state"] == "ready"
    assert described["manifest"]["run"] == {"file": "run.sh"} and "env" not in described["manifest"]
    assert SECRET not in json.dumps(described)
    spec = json.loads(Store(spool).get(cid))
    assert spec["sealed_env"] not in json.dumps(described)

    # Refusals: not a CID, unknown CID, a header CGI cannot pass on; nothing dropped for them.
    before = _entries(spool)
    assert gateway.json("POST", "/not-a-cid")[0] == 400
    assert gateway.json("GET", "/favicon.ico")[0] == 400
    unknown = Store(spool).put(b"nothing deployed here")
    Store(spool).path(unknown).unlink()
    status, refused = gateway.json("POST", f"/{unknown}/x", body=b"data")
    assert status == 404 and "unknown CID" in refused["error"]
    assert gateway.json("GET", f"/{unknown}")[0] == 404
    status, refused = gateway.json("POST", f"/{cid}/x", headers={"X_Under": "1"})
    assert status == 400 and "header name" in refused["error"]
    assert _entries(spool) == before

    families = {f.name: f for f in text_string_to_metric_families(gateway.request("GET", "/metrics")[2].decode())}
    requests = {(s.labels["route"], s.labels["status"]): s.value for s in families["cutor_gateway_requests"].samples}
    assert requests[("invoke", "201")] == 3 and requests[("invoke", "404")] == 1 and requests[("describe", "200")] == 1
    assert families["cutor_gateway_invoke_seconds"].type == "histogram"
    count = [s for s in families["cutor_gateway_invoke_seconds"].samples if s.name.endswith("_count")]
    assert count[0].value == 6  # 3 answered, 1 unknown, 2 bad requests (describe's are not counted)
    assert families["cutor_gateway_received_bytes"].samples[0].value >= len(body)

    log = gateway.process.output()
    assert SECRET not in log and "the body" not in log and "a=1" not in log  # no bodies, no queries
    assert f'"PUT /{cid}/…" 201 id={entry}' in log


@pytest.mark.slow
def test_one_idempotency_key_runs_once_and_twenty_requests_at_once_each_get_their_answer(
    spool: Path,
    tmp_path: Path,
    server_key: Path,  # noqa: F811
    executors: Any,
    gateways: Any,
) -> None:
    executors(spool, "--server-key", str(server_key), "--concurrency", "1", "--invocations", "4")
    cid = deploy(spool, tmp_path / "app", {"run": 'printf "Content-Type: text/plain\\n\\n%s:" "$QUERY_STRING"; cat'})
    assert built(spool, cid).state == DeploymentState.READY
    first, second = gateways(spool), gateways(spool)  # two gateways on one spool share the key

    key = {"Idempotency-Key": "order-42"}
    status, one, body_one = first.request("POST", f"/{cid}/?n=1", b"pay once", key)
    assert status == 200
    status, two, body_two = second.request("POST", f"/{cid}/?n=1", b"pay once", key)
    assert status == 200 and body_two == body_one and two["X-Request-Id"] == one["X-Request-Id"]
    done = spool / "invocations" / "done"
    requests = {e: json.loads((done / e / "request.json").read_text()) for e in os.listdir(done)}
    ran = [e for e, request in requests.items() if request.get("idempotency_key") == "order-42"]
    assert ran == [one["X-Request-Id"]]  # one entry, one run, one charge
    status, refused = second.json("POST", f"/{cid}/?n=1", body=b"pay twice", headers=key)
    assert status == 422 and "another request" in refused["error"]  # same key, another body
    assert second.json("POST", f"/{cid}/?n=2", body=b"pay once", headers=key)[0] == 422
    status, three, _ = first.request("POST", f"/{cid}/?n=1", b"pay once", {"Idempotency-Key": "order-43"})
    assert status == 200 and three["X-Request-Id"] != one["X-Request-Id"]

    answers: dict[int, tuple[int, bytes]] = {}

    def call(i: int) -> None:
        gateway = first if i % 2 else second
        status, _, body = gateway.request("POST", f"/{cid}/?n={i}", f"body-{i}".encode())
        answers[i] = (status, body)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(240)
    assert sorted(answers) == list(range(20))
    for i, (status, body) in answers.items():
        query, rest = body.decode().split(":", 1)
        assert (status, query, rest) == (200, f"n={i}", f"body-{i}")


def test_a_large_body_is_refused_and_without_an_executor_the_entry_is_withdrawn(
    spool: Path,
    tmp_path: Path,
    server_key: Path,  # noqa: F811
    gateways: Any,
) -> None:
    write_config(spool, deployments={"max_body": 1000})
    cid = deploy(spool, tmp_path / "app", {"run": "cat"})  # deployed, never built: no executor runs
    gateway = gateways(spool, "--claim-timeout", "0.5")
    before = _entries(spool)  # the deployment's build entry waits in incoming/
    status, refused = gateway.json("POST", f"/{cid}/", body=b"x" * 1001)
    assert status == 413 and "maximum of 1000 bytes" in refused["error"]

    # Chunked: no Content-Length, refused once the stream crosses the limit.
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
    connection.request("POST", f"/{cid}/", body=iter([b"y" * 600, b"y" * 600]), encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 413 and b"maximum of 1000 bytes" in response.read()
    connection.close()
    assert _entries(spool) == before and os.listdir(spool / "tmp") == []

    status, answer, data = gateway.request("POST", f"/{cid}/", b"fits", {"Idempotency-Key": "k"})
    assert status == 503 and answer["Retry-After"] and "withdrawn" in json.loads(data)["error"]
    assert _entries(spool) == before and os.listdir(spool / "tmp") == []  # it will never run
    assert os.listdir(spool / "invocations" / "keys") == []  # the key released: a retry runs anew


@pytest.mark.slow
def test_out_of_time_is_a_504(
    spool: Path,
    tmp_path: Path,
    server_key: Path,  # noqa: F811
    executors: Any,
    gateways: Any,
) -> None:
    executors(spool, "--server-key", str(server_key), "--invocations", "2")
    run = 'sleep "${QUERY_STRING:-0}"; echo woke'
    cid = deploy(spool, tmp_path / "app", {"run": run, "limits": {"run": {"wall_time": "1s"}}})
    assert built(spool, cid).state == DeploymentState.READY
    gateway = gateways(spool)
    status, answer, data = gateway.request("POST", f"/{cid}/?0")
    assert (status, data) == (200, b"woke\n")
    status, answer, data = gateway.request("POST", f"/{cid}/?5")  # the program's wall time ran out
    assert status == 504 and "ran out of time" in json.loads(data)["error"]
    entry = answer["X-Request-Id"]
    outcome = json.loads((spool / "invocations" / "done" / entry / "result" / "status.json").read_text())["outcome"]
    assert outcome == "time_limit"

    # SIGTERM while a request is in flight: it is answered, then the gateway exits 0.
    answered: list[tuple[int, bytes]] = []
    flight = threading.Thread(target=lambda: answered.append(gateway.request("POST", f"/{cid}/?0.8")[::2]))
    flight.start()
    active = spool / "invocations" / "active"
    wait_until(lambda: os.listdir(active), 30, "the request's invocation claimed")
    gateway.process.signal(signal.SIGTERM)
    flight.join(60)
    assert answered == [(200, b"woke\n")]
    assert gateway.process.proc is not None and gateway.process.proc.wait(30) == 0

    impatient = gateways(spool, "--timeout", "0.3")  # the gateway's own timeout after the claim
    status, answer, data = impatient.request("POST", f"/{cid}/?0.9")
    assert status == 504 and "gateway's timeout" in json.loads(data)["error"]
    done = spool / "invocations" / "done" / answer["X-Request-Id"] / "result" / "response.json"
    wait_until(done.is_file, 30, "the invocation's own end")  # it goes on, and ends well


def test_the_gateway_refuses_a_directory_that_is_not_a_spool(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*CLI, "--spool", str(tmp_path / "nowhere"), "gateway", "--listen", "127.0.0.1:0"],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 78 and b"is not a spool" in proc.stderr
    assert not (tmp_path / "nowhere").exists()


def test_connections_to_the_gateway_socket_are_not_delayed_by_nagle() -> None:
    """The listening socket from `bind`, served the way uvicorn serves it (asyncio's create_server
    on that socket): every accepted connection has TCP_NODELAY. Without it, each answer after
    the first on a keep-alive connection waited 40 ms for the client's delayed ACK (headers and
    body are two writes), which benchmarks/request_flow.py found: 44 ms per request instead of 1."""
    seen: list[int] = []

    async def serve_one() -> None:
        sock = bind("127.0.0.1", 0)
        accepted = asyncio.Event()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                seen.append(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                accepted.set()

        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            await asyncio.wait_for(accepted.wait(), 10)
            writer.close()

    asyncio.run(serve_one())
    assert seen and seen[0] != 0


# -- units: the key file and the statuses of endings -------------------------------------------


def test_an_idempotency_key_is_made_once_whoever_races_for_it(spool: Path) -> None:
    paths = SpoolPaths(spool)
    key = idempotency.key_path(paths, "bafy-cid", "order-1")
    assert key != idempotency.key_path(paths, "bafy-cid", "order-1", payer="ed25519:other")
    assert key.parent == spool / "invocations" / "keys" and "order-1" not in key.name
    winners: list[idempotency.Record | None] = []
    threads = [
        threading.Thread(target=lambda i=i: winners.append(idempotency.remember(key, f"entry-{i}"))) for i in range(16)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    first = idempotency.recorded(key)
    assert winners.count(None) == 1 and [w.entry_id for w in winners if w is not None] == [first] * 15
    idempotency.release(key, "entry-other")  # names another entry: kept
    assert idempotency.recorded(key) == first
    assert first is not None
    idempotency.release(key, first)
    assert idempotency.recorded(key) is None and os.listdir(key.parent) == []


def test_an_executor_forgets_idempotency_keys_older_than_their_ttl(spool: Path, run_dir: Path, tmp_path: Path) -> None:
    """`invocations/keys/` grew without end: the executors' housekeeping removes keys made more
    than `deployments.idempotency_ttl` ago (and leftovers of makers that died), keeps newer ones."""
    write_config(spool, deployments={"idempotency_ttl": "1h"})
    paths = SpoolPaths(spool)
    old, new = (idempotency.key_path(paths, "bafy-cid", name) for name in ("old", "new"))
    assert idempotency.remember(old, "e-old") is None and idempotency.remember(new, "e-new") is None
    leftover = old.parent / f".{old.name}.dead0000beef"  # a maker killed between write and link
    leftover.write_text("e-dead\n")
    for path in (old, leftover):
        os.utime(path, (os.path.getmtime(path) - 7200,) * 2)
    assert idempotency.prune(paths, time.time(), 3600) == 2  # the function alone
    assert idempotency.recorded(new) == "e-new" and os.listdir(old.parent) == [new.name]
    assert idempotency.remember(old, "e-old") is None  # and through an executor's housekeeping
    os.utime(old, (os.path.getmtime(old) - 7200,) * 2)
    executor = ExecutorProcess(spool, ["executor", "--state-dir", str(run_dir / "state")], tmp_path / "ex.log")
    try:
        wait_until(lambda: not old.exists(), timeout=60, what="the old key forgotten")
    finally:
        executor.stop()
    assert idempotency.recorded(new) == "e-new"


@pytest.mark.parametrize(
    ("state", "where", "message", "code"),
    [
        ("invalid", "request", "method 'X Y' is not an HTTP method token", 400),
        ("invalid", "body", "is larger than the spool's maximum of 16 bytes", 413),
        ("invalid", "deployment", "unknown CID bafy…", 404),
        ("invalid", "deployment", "its build failed: compile", 502),
        ("invalid", "sealed_env", "does not open with this spool's server key", 502),
        ("error", "", "", 503),
        ("cancelled", "", "", 503),
    ],
)
def test_the_status_of_each_ending(spool: Path, state: str, where: str, message: str, code: int) -> None:
    """status.json documents written here as an executor writes them (an `error` ending needs
    max_attempts lost claims: the document stands in for them)."""
    paths = SpoolPaths(spool)
    key = idempotency.key_path(paths, "bafy-cid", "k")
    assert idempotency.remember(key, "e1") is None
    errors = [Problem(where=where, message=message)] if where else None
    status = StatusDocument(
        id="e1", state=State(state), errors=errors, reason="lost its leases" if errors is None else None
    )
    answer = answer_of(paths, status, key)
    assert answer.status == code and answer.entry_id == "e1"
    document = json.loads(answer.body)
    assert document["invocation"] == "e1"
    if where:
        assert document["problems"] == [{"where": where, "message": message}]
        assert idempotency.recorded(key) == "e1"  # the same answer for a retry
    else:
        assert ("Retry-After", "5") in answer.headers
        assert idempotency.recorded(key) is None  # the system's failure: a retry runs anew
