"""The status page's Deployments section on a spool with many deployments and invocations.

A spool with `--deployments` deployments (each made as `cutor-spool deploy` makes it: bundle, terms
and signed spec in cas/, a `ready` build record) and `--invocations` finished invocations spread
over them (`invocations/done/<id>/` with request.json, body, result/status.json and a 1 KiB
response.json, in the shapes the executor writes). Figures, medians over `--rounds`:

- full: `regenerate(full=True)`, every invocation and spec read (the cold start);
- one more: the update after one more invocation finished (what every worker pays, throttled);
- unchanged: a regeneration when nothing changed.

    .venv/bin/python benchmarks/status_page_deployments.py [--deployments 200] [--invocations 10000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from cutor_spool.atomic import write_json
from cutor_spool.config import StatusPageConfig
from cutor_spool.deployments import keys
from cutor_spool.deployments.manifest import parse_manifest
from cutor_spool.deployments.requests import write_build_record
from cutor_spool.deployments.spec import accept_terms, make_spec, utc_now
from cutor_spool.deployments.store import Store
from cutor_spool.deployments.terms import store_terms, write_default_terms
from cutor_spool.documents.deployment import DeploymentBuild, DeploymentState, InvocationRequest, Response
from cutor_spool.layout import SpoolPaths
from cutor_spool.watcher.claim import iso
from cutor_spool.web_status import regenerate

CONFIG = StatusPageConfig(interval=2.0, recent=200)


def make_deployment(paths: SpoolPaths, store: Store, n: int) -> str:
    owner = keys.SigningKey.generate()
    bundle = store.put(f"bundle {n}".encode())
    terms = accept_terms(owner, store_terms(paths, store))
    _, data = make_spec(owner, bundle=bundle, manifest=parse_manifest({"run": "cat"}), terms=terms, server_key=None)
    cid = store.put(data)
    write_build_record(paths, DeploymentBuild(deployment=cid, state=DeploymentState.READY, created=utc_now()))
    return cid


def write_invocation(paths: SpoolPaths, name: str, cid: str, finished: float) -> None:
    entry = paths.invocations.done / name
    (entry / "result").mkdir(parents=True)
    write_json(entry / "request.json", InvocationRequest(deployment=cid).dump(), fsync=False)
    (entry / "body").write_bytes(b"x" * 100)
    states = {"queued": iso(finished - 0.05), "claimed": iso(finished - 0.04), "running": iso(finished - 0.03)}
    status = {"id": name, "state": "done", "outcome": "ok", "attempts": 1, "states": {**states, "done": iso(finished)}}
    write_json(entry / "result" / "status.json", status, fsync=False)
    response = Response(status=200, reason="OK", headers=[("Content-Type", "text/plain")], body="y" * 1024)
    write_json(entry / "result" / "response.json", response.dump(), fsync=False)


def timed(paths: SpoolPaths, *, full: bool = False) -> float:
    started = time.perf_counter()
    regenerate(paths, CONFIG, full=full)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deployments", type=int, default=200)
    parser.add_argument("--invocations", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cutor-deployments-bench-")) / "spool"
    try:
        paths = SpoolPaths(root)
        paths.init()
        write_default_terms(paths)
        store = Store(root)
        cids = [make_deployment(paths, store, n) for n in range(args.deployments)]
        start = time.time() - args.invocations
        for i in range(args.invocations):
            write_invocation(paths, f"inv{i:06d}", cids[i % len(cids)], start + i)
        full, more, same = [], [], []
        for r in range(args.rounds):
            full.append(timed(paths, full=True))
            time.sleep(2.1)  # the directory's stamp settles (index.STAMP_SETTLE)
            write_invocation(paths, f"more{r:04d}", cids[0], time.time())
            more.append(timed(paths))
            time.sleep(2.1)
            timed(paths)  # the settled stamp is recorded
            same.append(timed(paths))
        print(
            json.dumps(
                {
                    "deployments": args.deployments,
                    "invocations": args.invocations,
                    "full_s": round(statistics.median(full), 3),
                    "one_more_s": round(statistics.median(more), 3),
                    "unchanged_s": round(statistics.median(same), 3),
                }
            )
        )
    finally:
        shutil.rmtree(root.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
