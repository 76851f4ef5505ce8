"""Warm servers: deployment.yaml's `server:` (unit), and server deployments served through real
executor processes and bubblewrap: one instance answers many requests, each deployment its own,
stopped when idle or after max_requests, a crash answered 502 and replaced, a server that never
listens refused within its ready_timeout, and hostile servers (a child left behind, an output
flood) stopped with their whole process tree."""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until
from test_invoke import built, deploy, entry_of, invoke

from cutor_spool.deployments import keys
from cutor_spool.deployments.errors import BadManifest
from cutor_spool.deployments.manifest import parse_manifest, read_manifest
from cutor_spool.documents.deployment import DeploymentState

# A server counting its requests: its answer names the instance (a token drawn at start) and the
# count, so that "the same instance" is what a caller can see.
APP = r"""
import hashlib, os, secrets, socketserver, sys, time
from http.server import BaseHTTPRequestHandler

TOKEN = secrets.token_hex(6)
COUNT = 0

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def address_string(self):
        return "unix"

    def answer(self):
        global COUNT
        COUNT += 1
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        path = self.path
        if path.startswith("/crash"):
            os._exit(3)
        if path.startswith("/fork-exit"):
            if os.fork() == 0:
                os.execvp("sleep", ["sleep", "300", "orphan-" + sys.argv[1]])
            os._exit(0)
        if path.startswith("/flood"):
            while True:
                sys.stderr.write("x" * 65536)
        if path.startswith("/slow"):
            time.sleep(60)
        if path.startswith("/hog"):
            bytearray(512 << 20)
        secret = hashlib.sha256(os.environ.get("TOKEN", "").encode()).hexdigest()[:12]
        text = (f"{TOKEN} {COUNT} {self.command} {path} agent={self.headers.get('X-Agent')} "
                f"auth={self.headers.get('Authorization')} secret={secret} body={body.decode()} uid={os.getuid()}")
        data = text.encode()
        self.send_response(201 if self.command == "PUT" else 200, "Fine")
        self.send_header("Content-Type", "text/plain")
        self.send_header("X-Instance", TOKEN)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = answer

class Server(socketserver.UnixStreamServer):
    pass

Server(os.environ["CUTOR_SOCKET"], Handler).serve_forever()
"""


def _server(marker: str, **settings: Any) -> dict[str, Any]:
    return {"server": {"command": f"exec python3 app.py {marker}", **settings}}


def _deploy(spool: Path, where: Path, manifest: dict[str, Any]) -> str:
    cid = deploy(spool, where, manifest, {"app.py": APP})
    assert built(spool, cid).state == DeploymentState.READY
    return cid


def _call(spool: Path, cid: str, path: str = "/", *args: str, data: bytes = b"") -> tuple[int, dict[str, Any]]:
    code, out = invoke(spool, cid, "--path", path, *args, data=data)
    return code, out


def _instance_count(out: dict[str, Any]) -> tuple[str, int]:
    token, count = out["response"]["body"].split()[:2]
    return token, int(count)


def _uid(out: dict[str, Any]) -> int:
    return int(out["response"]["body"].rsplit("uid=", 1)[1])


def _warm(spool: Path, out: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((entry_of(spool, out["status"]) / "result" / "warm.json").read_text())
    return data


def _processes_with(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if marker.encode() in fh.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


# -- deployment.yaml: unit ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("manifest", "where", "why"),
    [
        ({"run": "./x", "server": {"command": "./y"}}, "(top level)", "not both"),
        ({}, "(top level)", "give `run`"),
        ({"server": {"command": "./y", "port": 80}}, "server.port", "unknown key"),
        ({"server": {}}, "server.command", "is required"),
        ({"server": {"command": "./y", "idle_timeout": "2h"}}, "server.idle_timeout", "between 1 and 3600"),
        ({"server": {"command": "./y", "ready_timeout": "0s"}}, "server.ready_timeout", "between 0.1 and 300"),
        ({"server": {"command": "./y", "max_requests": 0}}, "server.max_requests", "greater than or equal to 1"),
    ],
)
def test_bad_server_settings_are_refused_with_their_field(manifest: dict[str, Any], where: str, why: str) -> None:
    with pytest.raises(BadManifest) as caught:
        parse_manifest(manifest)
    assert any(place == where and why in message for place, message in caught.value.problems), caught.value.problems


def test_server_settings_parse_and_a_named_command_file_must_exist(tmp_path: Path) -> None:
    manifest = parse_manifest({"server": {"command": "python3 app.py", "idle_timeout": "90s", "ready_timeout": "2s"}})
    assert manifest.server is not None and manifest.run is None
    assert (manifest.server.idle_timeout, manifest.server.max_requests, manifest.server.ready_timeout) == (90, 1000, 2)
    (tmp_path / "deployment.yaml").write_text("server: {command: {file: serve.sh}}\n")
    with pytest.raises(BadManifest) as caught:
        read_manifest(tmp_path)
    assert ("server.command.file", "'serve.sh' is not a file of the deployment") in caught.value.problems


# -- through executors -------------------------------------------------------------------------


@pytest.fixture
def start(spool: Path, tmp_path: Path, executors: Any) -> Any:
    """Starts an executor of the spool, with the spool's server key (made here)."""
    key = tmp_path / "server.key"
    keys.make_server_key(spool, key)
    return lambda *args: executors(spool, "--server-key", str(key), *args)


def test_one_instance_answers_many_requests_and_each_deployment_has_its_own(
    spool: Path, tmp_path: Path, start: Any
) -> None:
    executor = start("--invocations", "2")
    secret = "warm-secret-" + secrets.token_hex(4)
    marker = "one-" + secrets.token_hex(4)
    first = _deploy(spool, tmp_path / "a", {**_server(marker), "env": {"TOKEN": secret}})
    second = _deploy(spool, tmp_path / "b", _server("two-" + secrets.token_hex(4)))

    code, out = _call(spool, first, "/items/7", "--method", "PUT", "--query", "q=1", "-H", "X-Agent: tester",
                      "-H", "Authorization: Bearer abc", data=b"hello")  # fmt: skip
    assert code == 0, out
    response = out["response"]
    token, count = _instance_count(out)
    assert count == 1 and response["status"] == 201 and response["reason"] == "Fine"
    assert ["X-Instance", token] in response["headers"] and ["Content-Type", "text/plain"] in response["headers"]
    assert not any(name.lower() in ("content-length", "connection") for name, _ in response["headers"])
    import hashlib

    hashed = hashlib.sha256(secret.encode()).hexdigest()[:12]
    assert response["body"].split(maxsplit=2)[2] == (
        f"PUT /items/7?q=1 agent=tester auth=None secret={hashed} body=hello uid={_uid(out)}"
    )
    assert _uid(out) != 0  # the slot's uid, as a run stage's
    cold = _warm(spool, out)
    assert cold["cold_start"] > 0 and cold["request"] == 1 and cold["instance"]
    assert cold["wall_time"] > 0 and cold["cpu_time"] is not None

    for expected in (2, 3, 4):
        code, out = _call(spool, first)
        assert code == 0 and _instance_count(out) == (token, expected)
        warm = _warm(spool, out)
        assert warm["cold_start"] is None and warm["instance"] == cold["instance"]

    code, out = _call(spool, second)
    other, count = _instance_count(out)
    assert code == 0 and count == 1 and other != token
    assert _instance_count(_call(spool, first)[1]) == (token, 5)
    assert _processes_with(marker)
    executor.stop()  # the executor's shutdown stops its instances
    assert not _processes_with(marker)


@pytest.mark.slow
def test_an_idle_instance_stops_and_max_requests_restarts_it(spool: Path, tmp_path: Path, start: Any) -> None:
    start()
    marker = "idle-" + secrets.token_hex(4)
    idle = _deploy(spool, tmp_path / "idle", _server(marker, idle_timeout="1s"))
    token, count = _instance_count(_call(spool, idle)[1])
    assert count == 1 and _processes_with(marker)
    wait_until(lambda: not _processes_with(marker), 20, "the idle instance to stop")
    again, count = _instance_count(_call(spool, idle)[1])
    assert count == 1 and again != token

    capped = _deploy(spool, tmp_path / "capped", _server("cap-" + secrets.token_hex(4), max_requests=2))
    answers = [_instance_count(_call(spool, capped)[1]) for _ in range(5)]
    assert [count for _, count in answers] == [1, 2, 1, 2, 1]
    tokens = [token for token, _ in answers]
    assert tokens[0] == tokens[1] != tokens[2] == tokens[3] != tokens[4]


@pytest.mark.slow
def test_a_crash_mid_request_is_a_502_and_the_next_request_gets_a_new_instance(
    spool: Path, tmp_path: Path, start: Any
) -> None:
    start()
    cid = _deploy(spool, tmp_path / "app", _server("crash-" + secrets.token_hex(4)))
    token, _ = _instance_count(_call(spool, cid)[1])
    code, out = _call(spool, cid, "/crash")
    assert code == 1 and out["response"]["status"] == 502
    assert "the server ended: runtime_error (exit code 3)" in out["response"]["reason"]
    assert out["status"]["outcome"] == "runtime_error"
    code, out = _call(spool, cid)
    again, count = _instance_count(out)
    assert code == 0 and count == 1 and again != token


@pytest.mark.slow
def test_a_server_that_never_listens_fails_clearly_within_its_ready_timeout(
    spool: Path, tmp_path: Path, start: Any
) -> None:
    start()
    marker = "mute-" + secrets.token_hex(4)
    command = f"exec python3 -c '__import__(\"time\").sleep(300)' {marker}"
    cid = _deploy(spool, tmp_path / "mute", {"server": {"command": command, "ready_timeout": "1s"}})
    started = time.monotonic()
    code, out = _call(spool, cid)
    assert code == 1 and out["response"]["status"] == 502 and time.monotonic() - started < 8
    reason = out["response"]["reason"]
    assert "did not start: it did not listen on $CUTOR_SOCKET (/work/.cutor.sock) within 1 s" in reason
    assert not _processes_with(marker)  # stopped, slot released
    exits = _deploy(spool, tmp_path / "exits", {"server": {"command": "echo bye; exit 4"}})
    code, out = _call(spool, exits)
    assert (
        code == 1
        and "ended before listening on $CUTOR_SOCKET: runtime_error (exit code 4)" in (out["response"]["reason"])
    )


@pytest.mark.slow
def test_hostile_servers_a_child_left_behind_a_flood_a_hog_and_a_stall_are_stopped_whole(
    spool: Path, tmp_path: Path, start: Any
) -> None:
    start()
    marker = "hostile-" + secrets.token_hex(4)
    manifest = {**_server(marker), "limits": {"run": {"wall_time": "2s", "memory": "128MiB", "output": "1MiB"}}}
    cid = _deploy(spool, tmp_path / "app", manifest)

    code, out = _call(spool, cid, "/fork-exit")  # the parent exits mid-request, its child sleeps on
    assert code == 1 and out["response"]["status"] == 502
    wait_until(lambda: not _processes_with(f"orphan-{marker}"), 20, "the orphan to be killed with its instance")

    code, out = _call(spool, cid, "/flood")
    assert code == 1 and out["response"]["status"] == 502 and out["status"]["outcome"] == "output_limit"

    code, out = _call(spool, cid, "/hog")
    assert code == 1 and out["response"]["status"] == 502 and out["status"]["outcome"] == "memory_limit"

    started = time.monotonic()
    code, out = _call(spool, cid, "/slow")
    assert code == 1 and out["response"]["status"] == 504 and out["status"]["outcome"] == "time_limit"
    assert time.monotonic() - started < 15
    assert _instance_count(_call(spool, cid)[1])[1] == 1  # and the next request is served afresh
    wait_until(lambda: len(_processes_with(marker)) <= 1, 20, "only the current instance to be left")


@pytest.mark.slow
def test_a_server_whose_socket_is_a_symlink_to_a_host_socket_is_never_connected_there(
    spool: Path, tmp_path: Path, start: Any
) -> None:
    """The executor is root: following the server's name would hand the caller's request to any
    socket of the host (a container engine's, say). It must never be followed."""
    start()
    host = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    host.bind(str(tmp_path / "host.sock"))
    host.listen()
    host.setblocking(False)
    lure = (
        f"import os, time\nos.symlink({str(tmp_path / 'host.sock')!r}, os.environ['CUTOR_SOCKET'])\ntime.sleep(300)\n"
    )
    cid = deploy(spool, tmp_path / "lure", {"server": {"command": "exec python3 lure.py", "ready_timeout": "1s"}},
                 {"lure.py": lure})  # fmt: skip
    assert built(spool, cid).state == DeploymentState.READY
    code, out = _call(spool, cid, data=b"GET /containers/json")
    assert code == 1 and out["response"]["status"] == 502
    assert "did not listen on $CUTOR_SOCKET" in out["response"]["reason"]
    with pytest.raises(BlockingIOError):
        host.accept()
    host.close()
