"""Invocations of deployments: the CGI rules (unit), and deploy -> build -> invoke through real
executor processes and bubblewrap: the request reaching the program as CGI meta-variables, its
answer as response.json, the sealed env reaching the program and nowhere else, every refusal
before anything runs, and many invocations of one deployment at once."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from cutor_spool.deployments import bundle, keys
from cutor_spool.deployments.manifest import MANIFEST_NAME, read_manifest
from cutor_spool.deployments.requests import drop_request, read_build_record, write_build_record
from cutor_spool.deployments.spec import accept_terms, make_spec, utc_now
from cutor_spool.deployments.store import Store
from cutor_spool.deployments.terms import store_terms
from cutor_spool.documents.deployment import DeploymentBuild, DeploymentState, InvocationRequest, RequestKind
from cutor_spool.layout import SpoolPaths
from cutor_spool.runner.invocations import cgi
from tests.conftest import CLI, wait_until, write_config

SECRET = "s3cr3t-invoke-0f9e8d7c6b5a"
ECHO_RUN = """\
printf 'Status: 201 Created\\r\\nContent-Type: text/plain\\r\\nX-Method: %s\\r\\n\\r\\n' "$REQUEST_METHOD"
echo "path=$PATH_INFO query=$QUERY_STRING type=$CONTENT_TYPE length=$CONTENT_LENGTH"
echo "agent=$HTTP_X_AGENT multi=$HTTP_X_MULTI auth=${HTTP_AUTHORIZATION-unset} proxy=${HTTP_PROXY-unset}"
echo "gateway=$GATEWAY_INTERFACE protocol=$SERVER_PROTOCOL script=$SCRIPT_NAME"
echo "token-sha256=$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)"
cat built.txt
cat
"""


# -- CGI: unit ---------------------------------------------------------------------------------


def test_output_without_a_header_block_is_a_200_body() -> None:
    response = cgi.parse_response(b"hello\nworld: not a header, the first line is no CGI field\n")
    assert response.status == 200
    assert response.body == "hello\nworld: not a header, the first line is no CGI field\n"
    assert response.headers == [("Content-Type", "text/plain; charset=utf-8")]


def test_a_header_block_gives_status_headers_and_the_exact_body() -> None:
    out = b'Status: 404 Not Found\r\nContent-Type: application/json\r\nX-A: 1\r\nX-A: 2\r\n\r\n{"x": 1}\r\n\r\nrest'
    response = cgi.parse_response(out)
    assert (response.status, response.reason) == (404, "Not Found")
    assert response.headers == [("Content-Type", "application/json"), ("X-A", "1"), ("X-A", "2")]
    assert response.body == '{"x": 1}\r\n\r\nrest'


def test_document_response_defaults_to_200_and_location_to_302() -> None:
    assert cgi.parse_response(b"Content-Type: text/html\n\n<p>").status == 200
    redirect = cgi.parse_response(b"Location: https://example.org/x\n\n")
    assert redirect.status == 302 and redirect.headers == [("Location", "https://example.org/x")]
    assert redirect.body == ""
    local = cgi.parse_response(b"Location: /elsewhere\n\n")
    assert local.status == 302
    only = cgi.parse_response(b"Status: 204 No Content\n")  # the end of the output ends the block
    assert (only.status, only.body) == (204, "")


def test_binary_bodies_are_kept_as_base64() -> None:
    body = bytes(range(256))
    response = cgi.parse_response(b"Content-Type: application/octet-stream\n\n" + body)
    assert response.body is None and base64.b64decode(response.body_base64 or "") == body
    bare = cgi.parse_response(b"\xff\xfe\x00binary")
    assert bare.status == 200 and bare.headers == [("Content-Type", "application/octet-stream")]
    assert base64.b64decode(bare.body_base64 or "") == b"\xff\xfe\x00binary"


@pytest.mark.parametrize(
    ("output", "why"),
    [
        (b"Content-Type: text/plain\nthis line is no header\n\nbody", "malformed CGI header line"),
        (b"Status: teapot\n\n", "bad CGI Status"),
        (b"Status: 700 Too High\n\n", "bad CGI Status"),
        (b"Status: 200 OK\nStatus: 500 Oops\n\n", "given twice"),
        (b"Content-Type: a\nContent-Type: b\n\n", "given twice"),
        (b"Content-Type: text/plain\nX-Bin: \xff\n\n", "not UTF-8"),
    ],
)
def test_a_malformed_header_block_is_a_502(output: bytes, why: str) -> None:
    response = cgi.parse_response(output)
    assert response.status == 502
    assert why in (response.reason or "")
    assert response.body is None and response.body_base64 is None


def _meta(headers: list[tuple[str, str]], **fields: Any) -> dict[str, str]:
    request = {"method": "POST", "path": "/a/b", "query": "x=1", "body_length": 3, "script_name": "/bafy", **fields}
    return cgi.meta_variables(cgi.CgiRequest(headers=tuple(headers), **request))


def test_meta_variables_follow_rfc_3875() -> None:
    env = _meta(
        [
            ("Content-Type", "text/plain"),
            ("Content-Length", "3"),
            ("X-Multi", "a"),
            ("x-multi", "b"),
            ("Authorization", "Bearer t"),
            ("Proxy", "evil:3128"),
            ("Host", "api.example.org:8080"),
        ]
    )
    assert env["REQUEST_METHOD"] == "POST" and env["PATH_INFO"] == "/a/b" and env["QUERY_STRING"] == "x=1"
    assert env["CONTENT_TYPE"] == "text/plain" and env["CONTENT_LENGTH"] == "3"
    assert env["GATEWAY_INTERFACE"] == "CGI/1.1" and env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["SCRIPT_NAME"] == "/bafy" and env["SERVER_NAME"] == "api.example.org"
    assert env["HTTP_X_MULTI"] == "a, b" and env["HTTP_HOST"] == "api.example.org:8080"
    for absent in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH", "HTTP_AUTHORIZATION", "HTTP_PROXY"):
        assert absent not in env
    empty = _meta([], query="", body_length=0)
    assert empty["QUERY_STRING"] == "" and "CONTENT_LENGTH" not in empty and "CONTENT_TYPE" not in empty


@pytest.mark.parametrize(
    ("method", "path", "query", "headers", "why"),
    [
        ("PO ST", "/", "", [], "method"),
        ("GET", "relative", "", [], "path"),
        ("GET", "/a\nb", "", [], "path"),
        ("GET", "/", "a b", [], "query"),
        ("GET", "/", "", [("X_Under", "1")], "header name"),
        ("GET", "/", "", [("X.Dot", "1")], "header name"),
        ("GET", "/", "", [("X-Ok", "a\r\nInjected: 1")], "control character"),
        ("GET", "/", "", [("X-Ok", "nul\x00")], "control character"),
    ],
)
def test_requests_that_cannot_be_passed_on_are_refused(
    method: str, path: str, query: str, headers: list[tuple[str, str]], why: str
) -> None:
    with pytest.raises(cgi.BadRequest, match=why):
        cgi.check_request(method, path, query, headers)


def test_the_stage_environment_lets_no_header_replace_the_owners_env_or_the_server_variables() -> None:
    meta = _meta([("X-Token", "from-the-caller")])
    env = cgi.stage_environment(meta, {"HTTP_X_TOKEN": "owner's", "REQUEST_METHOD": "FAKE", "TOKEN": "t"})
    assert env["HTTP_X_TOKEN"] == "owner's" and env["REQUEST_METHOD"] == "POST" and env["TOKEN"] == "t"


# -- deploy, build, invoke ---------------------------------------------------------------------


@pytest.fixture
def server_key(spool: Path, tmp_path: Path) -> Path:
    path = tmp_path / "server.key"
    keys.make_server_key(spool, path)
    return path


def deploy(spool: Path, where: Path, manifest: dict[str, Any], files: dict[str, str] | None = None) -> str:
    """A deployment made as `cutor-spool deploy` makes it (the library, step by step): its bundle,
    terms, signed spec in the store, its pending build record and its build entry dropped."""
    where.mkdir(parents=True)
    (where / MANIFEST_NAME).write_text(yaml.safe_dump(manifest))
    (where / "name.txt").write_text(where.name)  # every deployment its own bundle
    for name, text in (files or {}).items():
        (where / name).write_text(text)
    store, paths = Store(spool), SpoolPaths(spool)
    owner = keys.SigningKey.generate()
    bundle_cid = store.put(bundle.pack(where, skip={MANIFEST_NAME}))
    terms = accept_terms(owner, store_terms(paths, store))
    _, data = make_spec(
        owner, bundle=bundle_cid, manifest=read_manifest(where), terms=terms, server_key=keys.read_server_public(spool)
    )
    cid = store.put(data)
    write_build_record(paths, DeploymentBuild(deployment=cid, state=DeploymentState.PENDING, created=utc_now()))
    drop_request(paths, InvocationRequest(kind=RequestKind.BUILD, deployment=cid))
    return cid


def built(spool: Path, cid: str, timeout: float = 60.0) -> DeploymentBuild:
    def finished() -> DeploymentBuild | None:
        record = read_build_record(SpoolPaths(spool), cid)
        if record is None or record.state == DeploymentState.PENDING or record.build_entry is None:
            return None
        committed = spool / "invocations" / "done" / record.build_entry / "result" / "status.json"
        return record if committed.is_file() else None

    record: DeploymentBuild = wait_until(finished, timeout, f"the build of {cid}")
    return record


def invoke(spool: Path, cid: str, *args: str, data: bytes = b"", timeout: float = 60) -> tuple[int, dict[str, Any]]:
    command = [*CLI, "--spool", str(spool), "invoke", cid, "--data", "-", *args]
    proc = subprocess.run(
        [*command, "--wait", "--json", "--timeout", str(timeout)],
        input=data,
        capture_output=True,
        check=False,
    )
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {"stderr": proc.stderr.decode()}


def entry_of(spool: Path, status: dict[str, Any]) -> Path:
    return spool / "invocations" / "done" / status["id"]


def test_deploy_build_invoke_end_to_end(spool: Path, tmp_path: Path, server_key: Path, executors: Any) -> None:
    executors(spool, "--server-key", str(server_key))
    manifest = {
        "compile": "echo compiled-at-build > built.txt",
        "run": {"file": "run.sh"},
        "env": {"TOKEN": SECRET},
    }
    cid = deploy(spool, tmp_path / "app", manifest, {"run.sh": ECHO_RUN})
    record = built(spool, cid)
    assert record.state == DeploymentState.READY and record.work is not None
    assert Store(spool).has(record.work)

    code, out = invoke(
        spool,
        cid,
        "--method", "PUT", "--path", "/items/7", "--query", "a=1&b=2",
        "-H", "Content-Type: text/plain", "-H", "X-Agent: tester", "-H", "X-Multi: 1", "-H", "X-Multi: 2",
        "-H", "Authorization: Bearer abc", "-H", "Proxy: evil:3128",
        data=b"the body",
    )  # fmt: skip
    assert code == 0, out
    response = out["response"]
    assert response["status"] == 201 and response["reason"] == "Created"
    assert ["Content-Type", "text/plain"] in response["headers"] and ["X-Method", "PUT"] in response["headers"]
    token_hash = hashlib.sha256(SECRET.encode()).hexdigest()
    assert response["body"] == (
        "path=/items/7 query=a=1&b=2 type=text/plain length=8\n"
        "agent=tester multi=1, 2 auth=unset proxy=unset\n"
        f"gateway=CGI/1.1 protocol=HTTP/1.1 script=/{cid}\n"
        f"token-sha256={token_hash}\n"
        "compiled-at-build\n"
        "the body"
    )
    entry = entry_of(spool, out["status"])
    assert json.loads((entry / "result" / "run.json").read_text())["status"] == "ok"
    assert out["status"]["state"] == "done" and out["status"]["outcome"] == "ok"

    # The CLI without --json prints the body, byte for byte.
    plain = subprocess.run(
        [*CLI, "--spool", str(spool), "invoke", cid, "--wait", "--timeout", "60"], capture_output=True, check=False
    )
    assert plain.returncode == 0 and plain.stdout.endswith(b"compiled-at-build\n")


def _files_holding(root: Path, needle: bytes) -> list[Path]:
    found = []
    for directory, _dirs, names in os.walk(root):
        for name in names:
            path = Path(directory) / name
            if not path.is_symlink() and path.is_file() and needle in path.read_bytes():
                found.append(path)
    return found


@pytest.mark.slow
def test_the_secret_reaches_the_program_and_lands_only_where_it_printed_it(
    spool: Path, tmp_path: Path, server_key: Path, executors: Any
) -> None:
    worker = executors(spool, "--server-key", str(server_key))
    run = (
        'if [ "$QUERY_STRING" = linger ]; then exec sleep 2.5; fi\n'
        'if [ "$QUERY_STRING" = show ]; then echo "token=$TOKEN"; else printf %s "$TOKEN" | sha256sum; fi'
    )
    cid = deploy(spool, tmp_path / "app", {"run": run, "env": {"TOKEN": SECRET}})
    assert built(spool, cid).state == DeploymentState.READY
    code, hidden = invoke(spool, cid)
    assert code == 0 and hidden["response"]["body"].startswith(hashlib.sha256(SECRET.encode()).hexdigest())
    assert _files_holding(spool, SECRET.encode()) == []  # not in the spec, a result, events, the page
    code, shown = invoke(spool, cid, "--query", "show")
    assert code == 0 and shown["response"]["body"] == f"token={SECRET}\n"
    printed = entry_of(spool, shown["status"]) / "result"
    assert sorted(_files_holding(spool, SECRET.encode())) == [printed / "response.json", printed / "run.json"]
    assert SECRET not in worker.output()
    # Nor on any command line of the host while the program runs (bubblewrap reads the stage's
    # environment from a memory file, not from its argv, which every host user can read).
    lingering = subprocess.Popen([*CLI, "--spool", str(spool), "invoke", cid, "--query", "linger", "--wait"])
    try:
        running = wait_until(lambda: _command_lines_holding(b"sleep\x002.5"), 30, "the lingering stage")
        assert running and _command_lines_holding(SECRET.encode()) == []
    finally:
        assert lingering.wait(60) == 0


def _command_lines_holding(needle: bytes) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and needle in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def _tamper(store: Store, cid: str) -> None:
    path = store.path(cid)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.chmod(0o644)
    path.write_bytes(bytes(data))


def _refused(spool: Path, out: dict[str, Any], why: str) -> None:
    status = out["status"]
    assert status["state"] == "invalid", status
    assert any(why in problem["message"] for problem in status["errors"]), status["errors"]
    result = entry_of(spool, status) / "result"
    assert not (result / "run.json").exists() and not (result / "response.json").exists()


@pytest.mark.slow
def test_tampered_blobs_a_wrong_server_key_and_unknown_cids_are_refused_before_anything_runs(
    spool: Path, tmp_path: Path, server_key: Path, executors: Any
) -> None:
    wrong = tmp_path / "wrong.key"
    other = tmp_path / "other-spool"
    other.mkdir()
    keys.make_server_key(other, wrong)
    worker = executors(spool, "--server-key", str(server_key))
    store = Store(spool)
    sealed = deploy(spool, tmp_path / "sealed", {"run": "echo sealed ran", "env": {"TOKEN": SECRET}})
    plain = deploy(spool, tmp_path / "plain", {"run": "echo ran"})
    spec_victim = deploy(spool, tmp_path / "victim", {"run": "echo ran again"})
    for cid in (sealed, plain, spec_victim):
        assert built(spool, cid).state == DeploymentState.READY

    _tamper(store, spec_victim)
    code, out = invoke(spool, spec_victim)
    assert code == 10
    _refused(spool, out, "never served")

    work = read_build_record(SpoolPaths(spool), plain).work  # no compile stage: the work area is the bundle
    assert work is not None
    _tamper(store, work)
    code, out = invoke(spool, plain)
    assert code == 10
    _refused(spool, out, "never served")

    unknown = store.put(b"nothing deployed")
    store.path(unknown).unlink()
    code, out = invoke(spool, unknown)
    assert code == 6 and "unknown CID" in out["stderr"]
    drop_request(SpoolPaths(spool), InvocationRequest(deployment=unknown), entry_id="unknown-cid")
    done = spool / "invocations" / "done" / "unknown-cid" / "result" / "status.json"
    status = wait_until(lambda: done.is_file() and json.loads(done.read_text()), 30, "the unknown CID's end")
    assert status["state"] == "invalid" and "unknown CID" in status["errors"][0]["message"]

    worker.stop()
    executors(spool, "--server-key", str(wrong))
    code, out = invoke(spool, sealed)
    assert code == 10
    _refused(spool, out, "sealed to")


@pytest.mark.slow
def test_a_failed_build_makes_its_invocations_invalid(
    spool: Path, tmp_path: Path, server_key: Path, executors: Any
) -> None:
    executors(spool, "--server-key", str(server_key))
    cid = deploy(spool, tmp_path / "app", {"compile": "echo 'no such compiler' >&2; exit 3", "run": "echo never"})
    record = built(spool, cid)
    assert record.state == DeploymentState.FAILED
    assert "compile" in (record.reason or "") and "no such compiler" in (record.reason or "")
    assert record.build_entry is not None
    build_status = spool / "invocations" / "done" / record.build_entry / "result"
    assert json.loads((build_status / "status.json").read_text())["outcome"] == "compile_error"
    assert json.loads((build_status / "compile.json").read_text())["exit_code"] == 3
    code, out = invoke(spool, cid)
    assert code == 10
    _refused(spool, out, "its build failed")


@pytest.mark.slow
def test_bodies_above_the_spools_maximum_are_refused(
    spool: Path, tmp_path: Path, server_key: Path, executors: Any
) -> None:
    write_config(spool, deployments={"max_body": 16})
    executors(spool, "--server-key", str(server_key))
    cid = deploy(spool, tmp_path / "app", {"run": "wc -c"})
    assert built(spool, cid).state == DeploymentState.READY
    code, out = invoke(spool, cid, data=b"x" * 17)
    assert code == 10 and "maximum of 16 bytes" in out["stderr"]
    assert list((spool / "invocations" / "incoming").iterdir()) == []
    code, out = invoke(spool, cid, data=b"x" * 16)
    assert code == 0 and out["response"]["body"] == "16\n"
    # A client that writes the entry itself is refused by the executor.
    paths = SpoolPaths(spool)
    drop_request(paths, InvocationRequest(deployment=cid), b"y" * 17, entry_id="too-big")
    done = spool / "invocations" / "done" / "too-big" / "result" / "status.json"
    status = wait_until(lambda: done.is_file() and json.loads(done.read_text()), 30, "the large body's end")
    assert status["state"] == "invalid" and "larger than the spool's maximum" in status["errors"][0]["message"]


@pytest.mark.slow
def test_fifty_concurrent_invocations_each_get_their_own_answer(
    spool: Path, tmp_path: Path, server_key: Path, executors: Any
) -> None:
    executors(spool, "--server-key", str(server_key), "--concurrency", "1", "--invocations", "4")
    cid = deploy(spool, tmp_path / "app", {"run": 'printf "Content-Type: text/plain\\n\\n%s:" "$QUERY_STRING"; cat'})
    assert built(spool, cid).state == DeploymentState.READY
    paths = SpoolPaths(spool)
    ids = [
        drop_request(paths, InvocationRequest(deployment=cid, query=f"n={i}"), f"body-{i}".encode(), entry_id=f"n{i}")
        for i in range(50)
    ]
    done = spool / "invocations" / "done"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not all((done / i / "result" / "response.json").exists() for i in ids):
        time.sleep(0.2)
    for i, entry_id in enumerate(ids):
        response = json.loads((done / entry_id / "result" / "response.json").read_text())
        assert response["status"] == 200 and response["body"] == f"n={i}:body-{i}"


@pytest.mark.slow
def test_an_invocation_waits_for_a_pending_build_without_spending_its_attempts(
    spool: Path, tmp_path: Path, server_key: Path, executors: Any
) -> None:
    write_config(spool, deployments={"build_wait": "0.3s"})
    cid = deploy(spool, tmp_path / "app", {"compile": "echo late > late.txt", "run": "cat late.txt"})
    build_entry = next((spool / "invocations" / "incoming").iterdir())
    parked = tmp_path / "parked-build"
    os.rename(build_entry, parked)  # deploy's build entry held back: its record stays pending
    paths = SpoolPaths(spool)
    executors(spool, "--server-key", str(server_key))
    drop_request(paths, InvocationRequest(deployment=cid), entry_id="early")

    def handed_back_twice() -> bool:  # its log, wherever the entry is (claimed again at once)
        for log in (spool / "invocations").glob("*/early*/result/attempts.jsonl"):
            try:
                if sum('"released"' in line for line in log.read_text().splitlines()) >= 2:
                    return True
            except FileNotFoundError:
                continue
        return False

    wait_until(handed_back_twice, 30, "the invocation handed back while its build is pending")
    os.rename(parked, spool / "invocations" / "incoming" / build_entry.name)
    done = spool / "invocations" / "done" / "early" / "result"
    wait_until((done / "response.json").is_file, 60, "the invocation's answer once built")
    assert json.loads((done / "response.json").read_text())["body"] == "late\n"
    status = json.loads((done / "status.json").read_text())
    assert status["state"] == "done" and status["outcome"] == "ok"
    assert status["attempts"] > 2  # claimed again and again, none of them counted against it


def _cli(spool: Path, *args: str, data: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*CLI, "--spool", str(spool), "invoke", *args], input=data, capture_output=True, check=False)


def test_the_cli_refuses_before_dropping(spool: Path, tmp_path: Path, server_key: Path) -> None:
    write_config(spool, deployments={"max_body": 4})
    cid = deploy(spool, tmp_path / "app", {"run": "cat"})
    incoming = spool / "invocations" / "incoming"
    before = sorted(incoming.iterdir())  # the build entry
    assert _cli(spool, "Qmnotacid").returncode == 2
    unknown = Store(spool).put(b"gone")
    Store(spool).path(unknown).unlink()
    refused = _cli(spool, unknown)
    assert refused.returncode == 6 and b"unknown CID" in refused.stderr
    assert _cli(spool, cid, "-H", "X_Under: 1").returncode == 2
    assert _cli(spool, cid, "-H", "no colon").returncode == 2
    too_big = _cli(spool, cid, "--data", "-", data=b"12345")
    assert too_big.returncode == 10 and b"maximum of 4 bytes" in too_big.stderr
    assert sorted(incoming.iterdir()) == before
    queued = _cli(spool, cid, "--data", "-", "--query", "a=1", data=b"1234")
    assert queued.returncode == 0
    entry = incoming / queued.stdout.decode().strip()
    assert (entry / "body").read_bytes() == b"1234"
    assert json.loads((entry / "request.json").read_text())["query"] == "a=1"


@pytest.mark.slow
def test_a_deployment_built_already_is_not_built_again(
    spool: Path, tmp_path: Path, server_key: Path, executors: Any
) -> None:
    executors(spool, "--server-key", str(server_key))
    cid = deploy(spool, tmp_path / "app", {"compile": "date +%N > stamp", "run": "cat stamp"})
    first = built(spool, cid)
    assert first.state == DeploymentState.READY
    again = drop_request(SpoolPaths(spool), InvocationRequest(kind=RequestKind.BUILD, deployment=cid))
    status = spool / "invocations" / "done" / again / "result" / "status.json"
    ended = wait_until(lambda: status.is_file() and json.loads(status.read_text()), 30, "the second build's end")
    assert ended["state"] == "done" and ended["outcome"] == "ok" and "compile" not in ended["stages"]
    assert read_build_record(SpoolPaths(spool), cid) == first


@pytest.mark.slow
def test_hostile_invocation_entries_neither_stall_nor_escape(
    spool: Path, tmp_path: Path, server_key: Path, executors: Any
) -> None:
    """A client controls every byte of the invocation entry it drops, as of a submission: a
    `result` of its own (a symlink out of the spool, a FIFO for a status), a body or request that is
    a link to a host file or a FIFO. Nothing stalls, nothing is written or read outside the entry."""
    outside = tmp_path / "host-dir"  # stands for /etc: the executor runs as root
    outside.mkdir()
    (outside / "precious").write_text("host secret 5be1\n")
    (outside / "request.json").write_text(json.dumps({"deployment": "x"}))
    worker = executors(spool, "--server-key", str(server_key), "--invocations", "2")
    cid = deploy(spool, tmp_path / "app", {"run": "echo answered; cat"})
    assert built(spool, cid).state == DeploymentState.READY
    request = json.dumps(InvocationRequest(deployment=cid).dump())

    def entry(name: str) -> Path:
        path = spool / "tmp" / f"hostile-{name}"
        path.mkdir()
        (path / "request.json").write_text(request)
        return path

    cases: dict[str, Path] = {}
    cases["result-link"] = entry("result-link")
    os.symlink(outside, cases["result-link"] / "result")
    cases["fifo-status"] = entry("fifo-status")
    (cases["fifo-status"] / "result").mkdir()
    os.mkfifo(cases["fifo-status"] / "result" / "status.json")
    os.mkfifo(cases["fifo-status"] / "result" / "attempts.jsonl")
    cases["body-link"] = entry("body-link")
    os.symlink(outside / "precious", cases["body-link"] / "body")
    cases["body-fifo"] = entry("body-fifo")
    os.mkfifo(cases["body-fifo"] / "body")
    cases["request-link"] = entry("request-link")
    (cases["request-link"] / "request.json").unlink()
    os.symlink(outside / "request.json", cases["request-link"] / "request.json")
    cases["request-deep"] = entry("request-deep")
    (cases["request-deep"] / "request.json").write_text("[" * 100_000 + "]" * 100_000)
    cases["request-huge"] = entry("request-huge")
    (cases["request-huge"] / "request.json").write_text(json.dumps({"deployment": cid, "query": "q" * (2 << 20)}))
    for name, path in cases.items():
        (path / ".ready").write_text("")
        os.rename(path, spool / "invocations" / "incoming" / name)

    done = spool / "invocations" / "done"

    def finished() -> bool:
        return all((done / name / "result" / "status.json").is_file() for name in cases)

    wait_until(finished, 60, "every hostile entry's end")  # a stall fails here
    assert sorted(os.listdir(outside)) == ["precious", "request.json"], "the executor wrote outside the entry"
    assert _files_holding(spool, b"host secret 5be1") == [], "the executor read a host file for a client"
    states = {name: json.loads((done / name / "result" / "status.json").read_text()) for name in cases}
    for name in ("result-link", "fifo-status"):
        assert states[name]["state"] == "done", states[name]
        assert json.loads((done / name / "result" / "response.json").read_text())["body"] == "answered\n"
    refused = {"body-link": "body", "body-fifo": "body"}
    refused |= {name: "request.json" for name in ("request-link", "request-deep", "request-huge")}
    for name, where in refused.items():
        assert states[name]["state"] == "invalid", states[name]
        assert states[name]["errors"][0]["where"] == where
    assert worker.proc is not None and worker.proc.poll() is None


def test_the_readme_walkthrough_deploy_then_invoke_through_the_clis(
    spool: Path, tmp_path: Path, server_key: Path, executors: Any
) -> None:
    """README, "Deployments": `deploy examples/deploy-echo --wait`, then `invoke --wait --json`."""
    executors(spool, "--concurrency", "2", "--server-key", str(server_key))
    owner = tmp_path / "owner.key"
    subprocess.run([*CLI, "keys", "new", "--out", str(owner)], check=True, capture_output=True)
    example = Path(__file__).resolve().parent.parent / "examples" / "deploy-echo"
    deployed = subprocess.run(
        [*CLI, "--spool", str(spool), "deploy", str(example), "--key", str(owner), "--accept-terms", "--wait"],
        capture_output=True,
        check=False,
    )
    assert deployed.returncode == 0, deployed.stderr
    cid = deployed.stdout.decode().strip()
    code, out = invoke(spool, cid, data=b"hello\n")
    assert code == 0, out
    assert out["response"] == {
        "status": 200,
        "reason": "OK",
        "headers": [["Content-Type", "text/plain; charset=utf-8"], ["X-Greeting", "hello from a sealed env var"]],
        "body": "POST /?\nhello\n",
    }


@pytest.mark.slow
def test_a_failing_program_is_a_502_and_one_out_of_time_a_504(
    spool: Path, tmp_path: Path, server_key: Path, executors: Any
) -> None:
    executors(spool, "--server-key", str(server_key))
    run = 'if [ "$QUERY_STRING" = slow ]; then sleep 30; fi; echo "Status: 200 OK"; echo; echo partial; exit 3'
    manifest = {"run": run, "limits": {"run": {"wall_time": "1s"}}}
    cid = deploy(spool, tmp_path / "app", manifest)
    assert built(spool, cid).state == DeploymentState.READY
    code, out = invoke(spool, cid)
    assert code == 1
    assert out["response"]["status"] == 502 and "exit code 3" in out["response"]["reason"]
    assert "body" not in out["response"] or out["response"]["body"] is None
    run_json = json.loads((entry_of(spool, out["status"]) / "result" / "run.json").read_text())
    assert run_json["stdout"] == "Status: 200 OK\n\npartial\n"  # the program's output is kept in run.json
    code, out = invoke(spool, cid, "--query", "slow")
    assert code == 1
    assert out["response"]["status"] == 504 and out["status"]["outcome"] == "time_limit"


@pytest.mark.slow
def test_a_build_of_a_tampered_bundle_or_spec_is_refused_and_recorded_failed(
    spool: Path, tmp_path: Path, server_key: Path, executors: Any
) -> None:
    store = Store(spool)
    bundle_victim = deploy(spool, tmp_path / "bundle", {"compile": "touch built", "run": "ls"})
    spec_victim = deploy(spool, tmp_path / "spec", {"compile": "touch built", "run": "ls"})
    paths = SpoolPaths(spool)
    _tamper(store, json.loads(store.path(bundle_victim).read_bytes())["bundle"])
    _tamper(store, spec_victim)
    executors(spool, "--server-key", str(server_key))
    for cid, where in ((bundle_victim, "bundle"), (spec_victim, "deployment")):
        record = built(spool, cid)
        assert record.state == DeploymentState.FAILED and "never served" in (record.reason or ""), record
        assert record.build_entry is not None
        result = spool / "invocations" / "done" / record.build_entry / "result"
        status = json.loads((result / "status.json").read_text())
        assert status["state"] == "invalid" and status["errors"][0]["where"] == where
        assert not (result / "compile.json").exists()  # nothing ran
    assert read_build_record(paths, bundle_victim) is not None
    stray = store.put(b"not a spec")  # a client's build entry for a CID nobody deployed
    entry = drop_request(paths, InvocationRequest(kind=RequestKind.BUILD, deployment=stray))
    status_path = spool / "invocations" / "done" / entry / "result" / "status.json"
    status = wait_until(lambda: status_path.is_file() and json.loads(status_path.read_text()), 30, "the stray build")
    assert status["state"] == "invalid" and read_build_record(paths, stray) is None
    assert not (spool / "deployments" / stray).exists()
