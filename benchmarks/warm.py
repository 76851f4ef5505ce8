"""Warm servers against per-request CGI: cold start, warm request latency and requests/s of a
trivial program through the spool, in one run, one executor process.

One Python program, `app.py`, deployed twice: as `run: exec python3 app.py` (a CGI program started
per invocation) and as `server: {command: exec python3 app.py}` (a warm server on $CUTOR_SOCKET,
answering the same `hi`). Measured, each from the start of `drop_request` (as `cutor-spool invoke`
drops an entry) to its entry in `invocations/done/`:

- cold start: the first request of `--cold` fresh server deployments (end to end, and the
  executor's own cold start from `warm.json`: slot, sandbox, the program listening);
- sequential latency: warm and CGI requests one at a time, interleaved, median and p95, and the
  warm request's exchange inside the executor (`warm.json`'s `wall_time`: the socket round trip);
- throughput: `--burst` requests of each dropped at once, requests/s until the last is done.

The issue's target for a warm server is 1,000 req/s with p95 < 10 ms through the gateway.

    sudo .venv/bin/python benchmarks/warm.py [--count 200] [--burst 400] [--cold 5]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from _common import DoneWatch, executors, median, percentile, scratch_spool

from cutor_spool.deployments import bundle, keys
from cutor_spool.deployments.manifest import parse_manifest
from cutor_spool.deployments.requests import drop_request, read_build_record, write_build_record
from cutor_spool.deployments.spec import accept_terms, make_spec, utc_now
from cutor_spool.deployments.store import Store
from cutor_spool.deployments.terms import store_terms
from cutor_spool.documents.deployment import DeploymentBuild, DeploymentState, InvocationRequest, RequestKind
from cutor_spool.layout import SpoolPaths

APP = """\
import os, socketserver, sys
from http.server import BaseHTTPRequestHandler

if "CUTOR_SOCKET" not in os.environ:  # a CGI program
    sys.stdout.write("Content-Type: text/plain\\n\\nhi\\n")
    sys.exit(0)

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"hi\\n")

socketserver.UnixStreamServer(os.environ["CUTOR_SOCKET"], Handler).serve_forever()
"""
CGI = {"run": "exec python3 app.py"}
SERVER = {"server": {"command": "exec python3 app.py", "max_requests": 1_000_000, "idle_timeout": "10m"}}


def deploy(spool: Path, app: Path, manifest: dict[str, Any]) -> str:
    app.mkdir()
    (app / "app.py").write_text(APP)
    (app / "name").write_text(app.name)  # each its own bundle and CID
    store, paths = Store(spool), SpoolPaths(spool)
    owner = keys.SigningKey.generate()
    terms = accept_terms(owner, store_terms(paths, store))
    _, data = make_spec(
        owner, bundle=store.put(bundle.pack(app)), manifest=parse_manifest(manifest), terms=terms, server_key=None
    )
    cid = store.put(data)
    write_build_record(paths, DeploymentBuild(deployment=cid, state=DeploymentState.PENDING, created=utc_now()))
    drop_request(paths, InvocationRequest(kind=RequestKind.BUILD, deployment=cid))
    return cid


def wait_built(spool: Path, cids: list[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    for cid in cids:
        while True:
            record = read_build_record(SpoolPaths(spool), cid)
            if record is not None and record.state == DeploymentState.READY:
                break
            if (record is not None and record.state == DeploymentState.FAILED) or time.monotonic() > deadline:
                raise RuntimeError(f"the build of {cid} did not succeed: {record}")
            time.sleep(0.05)


def result(spool: Path, entry_id: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((spool / "invocations" / "done" / entry_id / "result" / name).read_text())
    return data


def checked(spool: Path, entry_id: str) -> None:
    response = result(spool, entry_id, "response.json")
    if (response.get("status"), response.get("body")) != (200, "hi\n"):
        raise RuntimeError(f"{entry_id} did not answer as expected: {response}")


class Bench:
    def __init__(self, spool: Path, watch: DoneWatch) -> None:
        self.spool, self.watch, self.paths = spool, watch, SpoolPaths(spool)

    def one(self, cid: str, name: str) -> float:
        start = time.perf_counter()
        drop_request(self.paths, InvocationRequest(deployment=cid), entry_id=name)
        return (self.watch.wait(name) - start) * 1000

    def burst(self, cid: str, prefix: str, count: int) -> float:
        names = [f"{prefix}-{i:05d}" for i in range(count)]
        start = time.perf_counter()
        for name in names:
            drop_request(self.paths, InvocationRequest(deployment=cid), entry_id=name)
        end = self.watch.wait_all(names)
        for name in (names[0], names[-1]):
            checked(self.spool, name)
        return count / (end - start)


def run(count: int, burst: int, cold: int, invocations: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    with scratch_spool() as spool:
        cgi = deploy(spool, spool.parent / "cgi", CGI)
        server = deploy(spool, spool.parent / "server", SERVER)
        colds = [deploy(spool, spool.parent / f"cold-{i}", SERVER) for i in range(cold)]
        watch = DoneWatch(SpoolPaths(spool).invocations.done)
        try:
            with executors(spool, 1, "--concurrency", "1", "--invocations", str(invocations)):
                wait_built(spool, [cgi, server, *colds])
                bench = Bench(spool, watch)
                ends, execs = [], []
                for i, cid in enumerate(colds):
                    ends.append(bench.one(cid, f"cold-{i}"))
                    execs.append(result(spool, f"cold-{i}", "warm.json")["cold_start"] * 1000)
                    checked(spool, f"cold-{i}")
                figures["cold.end_to_end.median"], figures["cold.executor.median"] = median(ends), median(execs)
                for i in range(5):  # warm-up: the server's instance, the CGI deployment's files
                    bench.one(server, f"w-warm-{i}")
                    bench.one(cgi, f"w-cgi-{i}")
                warm, plain, exchange = [], [], []
                for i in range(count):
                    warm.append(bench.one(server, f"warm-{i:05d}"))
                    exchange.append(result(spool, f"warm-{i:05d}", "warm.json")["wall_time"] * 1000)
                    plain.append(bench.one(cgi, f"cgi-{i:05d}"))
                for key, values in (("warm", warm), ("cgi", plain), ("exchange", exchange)):
                    figures[f"{key}.median"], figures[f"{key}.p95"] = median(values), percentile(values, 0.95)
                checked(spool, f"warm-{count - 1:05d}")
                checked(spool, f"cgi-{count - 1:05d}")
                figures["warm.rps"] = bench.burst(server, "burst-warm", burst)
                figures["cgi.rps"] = bench.burst(cgi, "burst-cgi", burst)
                instances = {result(spool, f"warm-{i:05d}", "warm.json")["instance"] for i in range(count)}
                figures["warm.instances"] = len(instances)
        finally:
            watch.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--burst", type=int, default=400)
    parser.add_argument("--cold", type=int, default=5)
    parser.add_argument("--invocations", type=int, default=2, help="the executor's invocation threads")
    args = parser.parse_args()
    f = run(args.count, args.burst, args.cold, args.invocations)
    print(f"cold start (median of {args.cold}): {f['cold.end_to_end.median']:.1f} ms end to end, "
          f"{f['cold.executor.median']:.1f} ms of it in the executor (slot, sandbox, listening)")  # fmt: skip
    for key, label in (("warm", "warm server, drop to done"), ("cgi", "CGI per request, drop to done"),
                       ("exchange", "warm exchange in the executor")):  # fmt: skip
        print(f"{label:32s} median / p95 {f[f'{key}.median']:7.2f} / {f[f'{key}.p95']:7.2f} ms  [{args.count}]")
    print(f"throughput ({args.burst} dropped at once, {args.invocations} invocation threads): "
          f"warm {f['warm.rps']:.0f} req/s, CGI {f['cgi.rps']:.0f} req/s")  # fmt: skip
    print(f"warm instances used by the sequential requests: {f['warm.instances']:.0f}")
    print("target (the issue, through the gateway): 1000 req/s, p95 < 10 ms")


if __name__ == "__main__":
    main()
