"""Invoke-to-response latency of a trivial deployment against drop-to-final of the same program as
a plain submission, in one run, one executor process serving both queues (one slot each).

The deployment (`run: echo hi`, no compile stage, no env) is made with the library as `deploy`
makes it and built once; then, round by round, one invocation and one plain submission of
`run: echo hi`, so that load from elsewhere weighs on both alike. Each is timed from the start of
its client's drop (`drop_request`, as `cutor-spool invoke` does; `client.submit`, as `cutor-spool
submit` does: both fsync what they write) to the appearance of its entry in done/ (an
invocation's response.json written by then). Median and p95 of each; the target is an invocation
at most 1.2x the plain run (it skips intake and validation, and adds the spec's verification and
unpacking the work area).

    sudo .venv/bin/python benchmarks/invoke.py [--count 200]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import DoneWatch, check_done, executors, make_source, median, percentile, scratch_spool

from cutor_spool.deployments import bundle, keys
from cutor_spool.deployments.manifest import parse_manifest
from cutor_spool.deployments.requests import drop_request, read_build_record, write_build_record
from cutor_spool.deployments.spec import accept_terms, make_spec, utc_now
from cutor_spool.deployments.store import Store
from cutor_spool.deployments.terms import store_terms
from cutor_spool.documents.deployment import DeploymentBuild, DeploymentState, InvocationRequest, RequestKind
from cutor_spool.layout import SpoolPaths
from cutor_spool.watcher.client import submit

TRIVIAL = {"run": "echo hi"}


def deploy(spool: Path, app: Path) -> str:
    app.mkdir()
    (app / "README").write_text("a trivial deployment\n")
    store, paths = Store(spool), SpoolPaths(spool)
    owner = keys.SigningKey.generate()
    terms = accept_terms(owner, store_terms(paths, store))
    _, data = make_spec(
        owner, bundle=store.put(bundle.pack(app)), manifest=parse_manifest(TRIVIAL), terms=terms, server_key=None
    )
    cid = store.put(data)
    write_build_record(paths, DeploymentBuild(deployment=cid, state=DeploymentState.PENDING, created=utc_now()))
    drop_request(paths, InvocationRequest(kind=RequestKind.BUILD, deployment=cid))
    return cid


def wait_built(spool: Path, cid: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = read_build_record(SpoolPaths(spool), cid)
        if record is not None and record.state == DeploymentState.READY:
            return
        if record is not None and record.state == DeploymentState.FAILED:
            raise RuntimeError(f"the build failed: {record.reason}")
        time.sleep(0.05)
    raise TimeoutError("the deployment was not built")


def check_response(spool: Path, entry_id: str) -> None:
    response = json.loads((spool / "invocations" / "done" / entry_id / "result" / "response.json").read_text())
    if (response.get("status"), response.get("body")) != (200, "hi\n"):
        raise RuntimeError(f"{entry_id} did not answer as expected: {response}")


def run(count: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {"invoke": [], "plain": []}
    with scratch_spool() as spool:
        keys.make_server_key(spool, spool.parent / "server.key")
        paths = SpoolPaths(spool)
        source = make_source(spool.parent, "trivial", TRIVIAL)
        cid = deploy(spool, spool.parent / "app")
        plain_watch = DoneWatch(spool / "done")
        invoke_watch = DoneWatch(paths.invocations.done)
        args = ["--concurrency", "1", "--invocations", "1", "--server-key", str(spool.parent / "server.key")]
        try:
            with executors(spool, 1, *args):
                wait_built(spool, cid)
                for i in range(5):  # warm-up
                    submit(paths, source, f"warm-{i}")
                    plain_watch.wait(f"warm-{i}")
                    invoke_watch.wait(drop_request(paths, InvocationRequest(deployment=cid), entry_id=f"warm-{i}"))
                for i in range(count):
                    name = f"lat-{i:05d}"
                    start = time.perf_counter()
                    drop_request(paths, InvocationRequest(deployment=cid), entry_id=name)
                    samples["invoke"].append((invoke_watch.wait(name) - start) * 1000)
                    start = time.perf_counter()
                    submit(paths, source, name)
                    samples["plain"].append((plain_watch.wait(name) - start) * 1000)
            check_done(spool, ["warm-0", f"lat-{count - 1:05d}"])
            for name in ("warm-0", f"lat-{count - 1:05d}"):
                check_response(spool, name)
        finally:
            plain_watch.close()
            invoke_watch.close()
    figures: dict[str, float] = {}
    for key, values in samples.items():
        figures[f"{key}.median"] = median(values)
        figures[f"{key}.p95"] = percentile(values, 0.95)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    f = run(args.count)
    for key, label in (("invoke", "invoke to response"), ("plain", "plain submission, drop to final")):
        print(f"{label:34s} median / p95 {f[f'{key}.median']:8.1f} / {f[f'{key}.p95']:6.1f} ms")
    ratio = f["invoke.median"] / f["plain.median"]
    print(f"invocation / plain (median): {ratio:.2f}x  (target: at most 1.2x)  [{args.count} of each]")


if __name__ == "__main__":
    main()
