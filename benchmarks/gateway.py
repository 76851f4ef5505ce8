"""A trivial deployment through the HTTP gateway against the same invocation dropped straight into
the spool, in one run, one executor process (`--invocations 4`), one gateway process.

- latency: round by round, one `POST /{cid}/` through the gateway (http.client, a new connection
  each time, timed to the last byte of the answer) and one plain drop (`drop_request`, timed to
  its response.json in done/); median and p95 of each;
- throughput: `--clients` threads at once, each making requests one after the other, for
  `--count` requests in all, through the gateway and then as plain drops each waited for with
  `wait_for` (one inotify instance per waiting thread, as `cutor-spool invoke --wait`): requests
  per second, p50 and p95. Both are bound by the executor's sandboxes; the gateway's cost is the
  difference.

    sudo .venv/bin/python benchmarks/gateway.py [--count 100] [--clients 8]
"""

from __future__ import annotations

import argparse
import http.client
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from _common import DoneWatch, executors, median, percentile, scratch_spool
from invoke import deploy, wait_built

from cutor_spool.deployments import keys
from cutor_spool.deployments.requests import drop_request
from cutor_spool.documents.deployment import InvocationRequest
from cutor_spool.layout import SpoolPaths
from cutor_spool.runner.invocations.answer import read_response, wait_for

ROOT = Path(__file__).resolve().parent.parent


def start_gateway(spool: Path, log: Path, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    out = open(log, "wb")  # noqa: SIM115 - the process keeps it
    proc = subprocess.Popen(
        [sys.executable, "-m", "cutor_spool", "--spool", str(spool), "gateway", "--listen", "127.0.0.1:0", *args],
        cwd=ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", log.read_text(errors="replace"))
        if found:
            return proc, int(found.group(1))
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"the gateway did not start: {log.read_text(errors='replace')}")


def post(port: int, cid: str) -> bytes:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request("POST", f"/{cid}/", body=b"")
        response = connection.getresponse()
        body = response.read()
        if response.status != 200 or body != b"hi\n":
            raise RuntimeError(f"the gateway answered {response.status}: {body[:200]!r}")
        return body
    finally:
        connection.close()


def dropped(paths: SpoolPaths, cid: str) -> None:
    entry = drop_request(paths, InvocationRequest(deployment=cid))
    status = wait_for(paths, entry, 120)
    response = read_response(paths, entry)
    if status is None or response is None or response.status != 200:
        raise RuntimeError(f"{entry} did not answer: {status}")


def throughput(call: Callable[[], object], count: int, clients: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    left = [count]
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            start = time.perf_counter()
            call()
            with lock:
                latencies.append((time.perf_counter() - start) * 1000)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return count / (time.perf_counter() - started), latencies


def run(count: int, clients: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    with scratch_spool() as spool:
        key = spool.parent / "server.key"
        keys.make_server_key(spool, key)
        paths = SpoolPaths(spool)
        cid = deploy(spool, spool.parent / "app")
        watch = DoneWatch(paths.invocations.done)
        args = ["--concurrency", "1", "--invocations", "4", "--server-key", str(key)]
        gateway, port = start_gateway(spool, spool.parent / "gateway.log")
        try:
            with executors(spool, 1, *args):
                wait_built(spool, cid)
                for i in range(5):  # warm-up
                    post(port, cid)
                    watch.wait(drop_request(paths, InvocationRequest(deployment=cid), entry_id=f"warm-{i}"))
                samples: dict[str, list[float]] = {"http": [], "drop": []}
                for i in range(count):
                    start = time.perf_counter()
                    post(port, cid)
                    samples["http"].append((time.perf_counter() - start) * 1000)
                    name = f"lat-{i:05d}"
                    start = time.perf_counter()
                    drop_request(paths, InvocationRequest(deployment=cid), entry_id=name)
                    samples["drop"].append((watch.wait(name) - start) * 1000)
                for kind, values in samples.items():
                    figures[f"latency.{kind}.median"] = median(values)
                    figures[f"latency.{kind}.p95"] = percentile(values, 0.95)
                for kind, call in (("http", lambda: post(port, cid)), ("drop", lambda: dropped(paths, cid))):
                    rate, values = throughput(call, count, clients)
                    figures[f"rate.{kind}"] = rate
                    figures[f"rate.{kind}.median"] = median(values)
                    figures[f"rate.{kind}.p95"] = percentile(values, 0.95)
        finally:
            watch.close()
            gateway.terminate()
            gateway.wait(60)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    f = run(args.count, args.clients)
    for kind, label in (("http", "through the gateway"), ("drop", "plain drop")):
        print(
            f"one at a time, {label:20s} median / p95 {f[f'latency.{kind}.median']:7.1f} / "
            f"{f[f'latency.{kind}.p95']:7.1f} ms"
        )
    for kind, label in (("http", "through the gateway"), ("drop", "plain drop + wait")):
        print(
            f"{args.clients} clients, {label:20s} {f[f'rate.{kind}']:6.1f} req/s, p50 / p95 "
            f"{f[f'rate.{kind}.median']:7.1f} / {f[f'rate.{kind}.p95']:7.1f} ms"
        )
    print(f"[{args.count} requests of each]")


if __name__ == "__main__":
    main()
