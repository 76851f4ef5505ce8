"""The request flow end to end (issue 14): one spool, one executor, two gateways (one with the
direct path, the default, and one with `--no-direct`: every request through the spool, the
baseline), and the same trivial program deployed twice, as a per-request CGI program (cold) and as
a warm `server:` (warm.py's `app.py`, answering `hi`). In one run:

1. latency, one request at a time, the kinds interleaved round by round: a plain drop into
   the spool of each deployment (`drop_request`, timed to its entry in `invocations/done/`, as
   invoke.py and warm.py do), and a `POST /{cid}/` of each through the gateway (a new connection,
   timed to the answer's last byte), the warm one through both gateways; median and p95. The warm
   spool path's breakdown: its exchange inside the executor (`warm.json`'s `wall_time`), the
   spool's share (plain drop minus exchange) and the gateway's (spool path minus plain drop);
2. throughput: `--clients` threads, each making requests one after the other (a new connection
   each), `--count` requests of each kind (10x as many for the direct path): requests/s, p50, p95;
3. a bounded load test: open-loop arrivals (asyncio, raw HTTP/1.1 on loopback) at `--overload`
   times the warm server's measured throughput through the gateway's direct path (requests the
   door cannot take at once take the spool path), for `--load-seconds` worth of
   arrivals (at most `--load-cap` requests); every answer that is not the program's `hi` is an
   error (503 from the claim timeout, 504, a refused connection). The queue (entries in
   `invocations/incoming/` and `active/`) is sampled every 0.1 s; it drains when both are empty
   and every answer is back. It stops by itself: a request gives up after the gateway's queue
   timeout plus 10 s, and the queue is given 30 s after the last answer to empty;
4. the gateway's memory (VmRSS of its process; run before the load test, so that it is measured
   against ordinary use, not against the high-water mark of thousands of requests in flight)
   over `--memory` requests that exercise its code without a spool round trip each: 40% replays
   of an Idempotency-Key (answered from the first entry's result: the key file, status.json and
   response.json read, the CGI checks, the payments check, the access log and metrics), 40%
   direct-path requests to the warm server, 10% `GET /{cid}` (the spec verified and described),
   10% `POST` to an unknown CID (404), over up
   to 4 keep-alive connections, one thread each. RSS after the first 10% (the warm-up) and at
   the end; also after the load test.

    sudo .venv/bin/python benchmarks/request_flow.py [--count 200] [--clients 8] [--memory 100000]
    sudo .venv/bin/python benchmarks/request_flow.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import resource
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from _common import DoneWatch, executors, median, percentile, scratch_spool
from _report import Check, Measured, Spec, Target, Unit, render, rows_from
from gateway import dropped, post, start_gateway, throughput
from warm import CGI, SERVER, Bench, deploy, result, wait_built

from cutor_spool.deployments.cid import cid_of_bytes
from cutor_spool.layout import SpoolPaths

QUEUE_TIMEOUT = 300.0  # the gateway's default (`--queue-timeout`): the most a request waits in a moving queue


def gateway_ms(port: int, cid: str) -> float:
    start = time.perf_counter()
    post(port, cid)
    return (time.perf_counter() - start) * 1000


def latency(bench: Bench, ports: tuple[int, int], cids: dict[str, str], count: int) -> dict[str, float]:
    """`ports`: the gateway (direct path on) and the one without it (every request via the spool)."""
    samples: dict[str, list[float]] = {f"{how}.{kind}": [] for how in ("drop", "http") for kind in cids}
    samples["spool.warm"] = []
    exchange: list[float] = []
    for i in range(count):
        for kind, cid in cids.items():
            name = f"lat-{kind}-{i:05d}"
            samples[f"drop.{kind}"].append(bench.one(cid, name))
            samples[f"http.{kind}"].append(gateway_ms(ports[0], cid))
            if kind == "warm":
                exchange.append(result(bench.spool, name, "warm.json")["wall_time"] * 1000)
                samples["spool.warm"].append(gateway_ms(ports[1], cid))
    samples["exchange.warm"] = exchange
    figures: dict[str, float] = {}
    for key, values in samples.items():
        figures[f"latency.{key}.median"], figures[f"latency.{key}.p95"] = median(values), percentile(values, 0.95)
    return figures


def rates(
    paths: SpoolPaths, ports: tuple[int, int], cids: dict[str, str], count: int, clients: int
) -> dict[str, float]:
    figures: dict[str, float] = {}
    for kind, cid in cids.items():
        calls = [("drop", lambda c=cid: dropped(paths, c)), ("http", lambda c=cid: post(ports[0], c))]
        if kind == "warm":
            calls.append(("spool", lambda c=cid: post(ports[1], c)))
            calls.append(("direct", lambda c=cid: post(ports[0], c)))  # again, with 10x the count
        for how, call in calls:
            if how == "direct":
                rate, values = throughput(call, count * 10, clients)
                figures["rate.direct.warm"], figures["rate.direct.warm.median"] = rate, median(values)
                figures["rate.direct.warm.p95"] = percentile(values, 0.95)
                continue
            rate, values = throughput(call, count, clients)
            figures[f"rate.{how}.{kind}"] = rate
            figures[f"rate.{how}.{kind}.median"] = median(values)
            figures[f"rate.{how}.{kind}.p95"] = percentile(values, 0.95)
    return figures


# --- the bounded load test ---------------------------------------------------------------------


@dataclass
class Load:
    statuses: dict[str, int] = field(default_factory=dict)
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (s since start, incoming, active)
    last_arrival: float = 0.0
    last_answer: float = 0.0
    drained: float | None = None  # s since start when the queue was first empty after the last arrival
    latencies: list[float] = field(default_factory=list)
    left: list[str] = field(default_factory=list)  # what was still queued at the end


async def _request(port: int, path: str, give_up: float, load: Load, started: float) -> None:
    t0 = time.perf_counter()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        writer.write(head.encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), give_up)
        writer.close()
        status = data.split(b" ", 2)[1].decode() if data else "no answer"
        outcome = "ok" if status == "200" and data.endswith(b"\r\n\r\nhi\n") else status
    except (OSError, TimeoutError) as exc:
        outcome = type(exc).__name__
    now = time.perf_counter()
    load.statuses[outcome] = load.statuses.get(outcome, 0) + 1
    load.latencies.append((now - t0) * 1000)
    load.last_answer = max(load.last_answer, now - started)


async def _arrivals(port: int, cid: str, rate: float, count: int, give_up: float, load: Load, started: float) -> None:
    tasks = []
    for i in range(count):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_request(port, f"/{cid}/", give_up, load, started)))
    load.last_arrival = time.perf_counter() - started
    await asyncio.gather(*tasks)


def load_test(paths: SpoolPaths, port: int, cid: str, rate: float, count: int) -> Load:
    """Open-loop arrivals at `rate`/s, `count` of them; returns when every answer is back."""
    load = Load()
    queue = paths.invocations
    done = threading.Event()
    started = time.perf_counter()

    def sample() -> None:
        while not done.is_set():
            depth = len(os.listdir(queue.incoming)), len(os.listdir(queue.active))
            at = time.perf_counter() - started
            load.samples.append((at, *depth))
            answered = sum(load.statuses.values()) >= count  # (entries the gateway drops come later)
            if load.last_arrival and load.drained is None and depth == (0, 0) and answered:
                load.drained = at
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        asyncio.run(_arrivals(port, cid, rate, count, QUEUE_TIMEOUT + 10, load, started))
        deadline = time.monotonic() + 30  # every answer is back: the queue has 30 s more to empty
        while load.drained is None and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        done.set()
        sampler.join()
    load.left = sorted(os.listdir(queue.incoming)) + sorted(os.listdir(queue.active))
    return load


# --- the gateway's memory ----------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def memory(port: int, pid: int, cid: str, warm: str, total: int, clients: int) -> dict[str, float]:
    """`total` requests (replays, direct requests to the warm server, describes, 404s) from
    `clients` keep-alive connections; RSS sampled every 1% of them."""
    unknown = cid_of_bytes(b"no such deployment")
    keys = [f"bench-key-{n}" for n in range(16)]
    for key in keys:  # the first use of each key runs the program; every later one is a replay
        _keyed(http.client.HTTPConnection("127.0.0.1", port, timeout=60), cid, key)
    lock, sent, samples = threading.Lock(), [0], []
    step, warm_up = max(1, total // 100), max(1, total // 10)
    rss_warm: list[int] = []

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            while True:
                with lock:
                    n = sent[0]
                    if n >= total:
                        return
                    sent[0] += 1
                    if n % step == 0:
                        samples.append(rss_kib(pid))
                    if n == warm_up:
                        rss_warm.append(rss_kib(pid))
                kind = n % 10
                if kind == 8:
                    _expect(connection, "GET", f"/{cid}", 200, b'"cid"')
                elif kind == 9:
                    _expect(connection, "POST", f"/{unknown}/", 404, b"unknown CID")
                elif kind >= 4:
                    _expect(connection, "POST", f"/{warm}/", 200, b"hi\n", {"Content-Length": "0"})
                else:
                    _keyed(connection, cid, keys[n % len(keys)])
        finally:
            connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    end = rss_kib(pid)
    first = rss_warm[0] if rss_warm else samples[0]
    return {
        "memory.start": samples[0] / 1024,
        "memory.warm": first / 1024,
        "memory.end": end / 1024,
        "memory.max": max([*samples, end]) / 1024,
        "memory.rate": total / elapsed,
        "memory.seconds": elapsed,
    }


def _keyed(connection: http.client.HTTPConnection, cid: str, key: str) -> None:
    _expect(connection, "POST", f"/{cid}/", 200, b"hi\n", {"Idempotency-Key": key, "Content-Length": "0"})


def _expect(
    connection: http.client.HTTPConnection,
    method: str,
    path: str,
    status: int,
    contains: bytes,
    headers: dict[str, str] | None = None,
) -> None:
    connection.request(method, path, headers=headers or {})
    response = connection.getresponse()
    body = response.read()
    if response.status != status or contains not in body:
        raise RuntimeError(f"{method} {path}: {response.status} {body[:200]!r}, expected {status}")


# --- the run -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    count: int
    clients: int
    invocations: int
    overload: float
    load_seconds: float
    load_cap: int
    memory: int


def raise_open_files() -> None:
    """The load test holds one connection per request in flight, here and in the gateway (which
    inherits the limit)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run(counts: Counts) -> tuple[dict[str, float], Load]:
    raise_open_files()
    figures: dict[str, float] = {}
    with scratch_spool() as spool:
        paths = SpoolPaths(spool)
        cids = {"cgi": deploy(spool, spool.parent / "cgi", CGI), "warm": deploy(spool, spool.parent / "warm", SERVER)}
        watch = DoneWatch(paths.invocations.done)
        gateway, port = start_gateway(spool, spool.parent / "gateway.log")
        spooled, spool_port = start_gateway(spool, spool.parent / "gateway-spool.log", "--no-direct")
        ports = (port, spool_port)
        try:
            with executors(spool, 1, "--concurrency", "1", "--invocations", str(counts.invocations)):
                wait_built(spool, list(cids.values()))
                bench = Bench(spool, watch)
                for i in range(5):  # warm-up: the server's instance, the deployments' files, the gateway
                    for kind, cid in cids.items():
                        bench.one(cid, f"warm-up-{kind}-{i}")
                        post(port, cid)
                        post(spool_port, cid)
                figures.update(latency(bench, ports, cids, counts.count))
                figures.update(rates(paths, ports, cids, counts.count, counts.clients))
                # The memory run before the load test: measured against the RSS of ordinary use,
                # not against the high-water mark of thousands of requests in flight.
                figures.update(
                    memory(port, gateway.pid, cids["cgi"], cids["warm"], counts.memory, min(counts.clients, 4))
                )
                rate = counts.overload * figures["rate.direct.warm"]
                total = max(1, min(counts.load_cap, round(rate * counts.load_seconds)))
                load = load_test(paths, port, cids["warm"], rate, total)
                figures.update(
                    {"load.rate": rate, "load.count": total, "memory.after_load": rss_kib(gateway.pid) / 1024}
                )
        finally:
            watch.close()
            for proc in (gateway, spooled):
                proc.terminate()
                proc.wait(60)
    return figures, load


SPECS = [
    Spec("lat.drop_cgi", "plain drop, CGI program: median ({count} one at a time)", Unit.MS),
    Spec("lat.drop_cgi95", "plain drop, CGI program: p95", Unit.MS),
    Spec(
        "lat.cold",
        "cold (CGI per request) through the gateway: median",
        Unit.MS,
        "plain drop, same program",
        Target(Check.RATIO_AT_MOST, 1.3, "<= 1.3x"),
    ),
    Spec("lat.cold95", "cold through the gateway: p95", Unit.MS, "plain drop p95"),
    Spec("lat.drop_warm", "plain drop, warm server: median", Unit.MS),
    Spec(
        "lat.spool_warm",
        "warm server through the gateway, spool path (--no-direct): median",
        Unit.MS,
        "plain drop, warm server",
    ),
    Spec("lat.spool_warm95", "warm server through the gateway, spool path: p95", Unit.MS, "plain drop p95"),
    Spec("lat.warm", "warm server through the gateway, direct path: median", Unit.MS, "spool path"),
    Spec(
        "lat.warm95",
        "warm server through the gateway, direct path: p95",
        Unit.MS,
        "spool path p95",
        Target(Check.BELOW, 10, "< 10 ms"),
    ),
    Spec("lat.exchange", "of the spool path: the warm exchange in the executor (socket round trip)", Unit.MS),
    Spec("lat.spool", "of it: the spool (plain drop minus exchange)", Unit.MS),
    Spec("lat.gateway", "of it: the gateway (spool path minus plain drop)", Unit.MS),
    Spec("rate.drop_cgi", "plain drop + wait, CGI, {clients} clients", Unit.RATE),
    Spec("rate.cold", "cold through the gateway, {clients} clients", Unit.RATE, "plain drop + wait, CGI"),
    Spec("rate.cold95", "cold through the gateway, {clients} clients: p95", Unit.MS, "plain drop + wait p95"),
    Spec("rate.drop_warm", "plain drop + wait, warm server, {clients} clients", Unit.RATE),
    Spec(
        "rate.spool_warm",
        "warm server through the gateway, spool path, {clients} clients",
        Unit.RATE,
        "plain drop + wait, warm",
    ),
    Spec("rate.spool_warm95", "warm, spool path, {clients} clients: p95", Unit.MS, "plain drop + wait p95"),
    Spec(
        "rate.warm",
        "warm server through the gateway, direct path, {clients} clients ({direct} requests)",
        Unit.RATE,
        "spool path",
        Target(Check.AT_LEAST, 1000, ">= 1000/s"),
    ),
    Spec("rate.warm50", "warm, direct path, {clients} clients: median", Unit.MS, "spool path median"),
    Spec(
        "rate.warm95",
        "warm, direct path, {clients} clients: p95",
        Unit.MS,
        "spool path p95",
        Target(Check.BELOW, 10, "< 10 ms"),
    ),
    Spec("load.rate", "load test: open-loop arrivals at {overload:g}x the warm rate, {load} requests", Unit.RATE),
    Spec("load.errors", "load test: error rate", Unit.PERCENT, None, Target(Check.BELOW, 1e-9, "= 0")),
    Spec("load.peak", "load test: peak queue (incoming + active entries)", Unit.COUNT),
    Spec("load.drain", "load test: last arrival to an empty queue, every answer back", Unit.S),
    Spec("load.p95", "load test: answer p95", Unit.MS),
    Spec(
        "mem.end",
        "gateway RSS after {memory} requests (replays, direct, describes, 404s)",
        Unit.MIB,
        "after the first 10%",
        Target(Check.RATIO_AT_MOST, 1.10, "within 10% (<= 1.10x)"),
    ),
    Spec("mem.rate", "gateway requests/s during the memory run", Unit.RATE),
]


def measured(f: dict[str, float], load: Load) -> dict[str, Measured]:
    answers = sum(load.statuses.values())
    errors = answers - load.statuses.get("ok", 0)
    m = {
        "lat.drop_cgi": Measured(f["latency.drop.cgi.median"]),
        "lat.drop_cgi95": Measured(f["latency.drop.cgi.p95"]),
        "lat.cold": Measured(f["latency.http.cgi.median"], f["latency.drop.cgi.median"]),
        "lat.cold95": Measured(f["latency.http.cgi.p95"], f["latency.drop.cgi.p95"]),
        "lat.drop_warm": Measured(f["latency.drop.warm.median"]),
        "lat.spool_warm": Measured(f["latency.spool.warm.median"], f["latency.drop.warm.median"]),
        "lat.spool_warm95": Measured(f["latency.spool.warm.p95"], f["latency.drop.warm.p95"]),
        "lat.warm": Measured(f["latency.http.warm.median"], f["latency.spool.warm.median"]),
        "lat.warm95": Measured(f["latency.http.warm.p95"], f["latency.spool.warm.p95"]),
        "lat.exchange": Measured(f["latency.exchange.warm.median"]),
        "lat.spool": Measured(f["latency.drop.warm.median"] - f["latency.exchange.warm.median"]),
        "lat.gateway": Measured(f["latency.spool.warm.median"] - f["latency.drop.warm.median"]),
        "rate.drop_cgi": Measured(f["rate.drop.cgi"]),
        "rate.cold": Measured(f["rate.http.cgi"], f["rate.drop.cgi"]),
        "rate.cold95": Measured(f["rate.http.cgi.p95"], f["rate.drop.cgi.p95"]),
        "rate.drop_warm": Measured(f["rate.drop.warm"]),
        "rate.spool_warm": Measured(f["rate.spool.warm"], f["rate.drop.warm"]),
        "rate.spool_warm95": Measured(f["rate.spool.warm.p95"], f["rate.drop.warm.p95"]),
        "rate.warm": Measured(f["rate.direct.warm"], f["rate.spool.warm"]),
        "rate.warm50": Measured(f["rate.direct.warm.median"], f["rate.spool.warm.median"]),
        "rate.warm95": Measured(f["rate.direct.warm.p95"], f["rate.spool.warm.p95"]),
        "load.rate": Measured(f["load.rate"]),
        "load.errors": Measured(100 * errors / max(1, answers)),
        "load.peak": Measured(max((i + a for _, i, a in load.samples), default=0)),
        "load.p95": Measured(percentile(load.latencies, 0.95) if load.latencies else float("nan")),
        "mem.end": Measured(f["memory.end"], f["memory.warm"]),
        "mem.rate": Measured(f["memory.rate"]),
    }
    if load.drained is not None:
        m["load.drain"] = Measured(max(0.0, load.drained - load.last_arrival))
    return m


def report(counts: Counts, f: dict[str, float], load: Load) -> str:
    m = measured(f, load)
    notes = {} if load.drained is not None else {"load.drain": "did not drain"}
    fmt = {"count": counts.count, "clients": counts.clients, "overload": counts.overload,
           "load": int(f["load.count"]), "memory": counts.memory, "direct": counts.count * 10}  # fmt: skip
    rows = rows_from(SPECS, m, notes, fmt)
    table = render(rows, {"lat": "one at a time", "rate": "throughput", "load": "bounded load test",
                          "mem": "the gateway's memory"})  # fmt: skip
    lines = [table, ""]
    answers = sum(load.statuses.values())
    lines.append(f"load test answers: {dict(sorted(load.statuses.items()))} of {answers}; last arrival at "
                 f"{load.last_arrival:.1f} s, last answer at {load.last_answer:.1f} s")  # fmt: skip
    if load.left:
        lines.append(f"still queued at the end: {load.left[:10]}")
    step = max(1, len(load.samples) // 20)
    depth = ", ".join(f"{t:.1f}s:{i}+{a}" for t, i, a in load.samples[::step])
    lines.append(f"queue (s: incoming+active): {depth}")
    lines.append(f"gateway RSS: {f['memory.start']:.1f} MiB at the start of the memory run, {f['memory.warm']:.1f} "
                 f"after the first 10%, {f['memory.end']:.1f} at the end (max {f['memory.max']:.1f}); "
                 f"{100 * (f['memory.end'] / f['memory.warm'] - 1):+.1f}% ({f['memory.seconds']:.0f} s); "
                 f"{f['memory.after_load']:.1f} MiB after the load test")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200, help="requests of each kind, one at a time and at once")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--invocations", type=int, default=2, help="the executor's invocation threads")
    parser.add_argument("--overload", type=float, default=4.0, help="load test rate / measured warm rate")
    parser.add_argument("--load-seconds", type=float, default=10.0, help="seconds of arrivals in the load test")
    parser.add_argument("--load-cap", type=int, default=5000, help="at most this many load test requests")
    parser.add_argument("--memory", type=int, default=100_000, help="requests of the memory run")
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.count, args.load_seconds, args.load_cap, args.memory = 10, 1.0, 100, 1000
    counts = Counts(args.count, args.clients, args.invocations, args.overload, args.load_seconds, args.load_cap,
                    args.memory)  # fmt: skip
    load_before = os.getloadavg()
    started = time.monotonic()
    f, load = run(counts)
    load_after = os.getloadavg()
    print(f"load average (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in load_before)} at the start, "
          f"{' '.join(f'{x:.2f}' for x in load_after)} at the end; {os.cpu_count()} cpus; "
          f"took {(time.monotonic() - started) / 60:.1f} min; ratio = value / baseline")  # fmt: skip
    print(report(counts, f, load))


if __name__ == "__main__":
    main()
