"""The front page's Deployments section (docs/deployments.md): one row per deployment of
`deployments/`, with its spec's public fields, its build, and its invocations.

What it reads, and how often:

- `invocations/done/<id>/`: `request.json` (kind, deployment), `result/status.json` (state, the
  run stage's wall time), the HTTP status of `result/response.json` and who paid and what was held
  and charged (`result/payment.json`, runner/invocations/payment.py), once per entry, kept in the
  index's `invocations` section (`index.py`) and read again only when an entry is new or changed,
  as `done/` is.
- `deployments/<cid>/`: its `build.json` and its spec, the blob `cas/<shard>/<cid>`, read through
  the store (`Store.get` checks the bytes against the CID) and verified as an executor verifies it
  (`load_deployment`: the owner's signature, the terms). Kept in the index's `deployments` section
  under a signature of the record's directory and the blob's inode and times, so a spec is read
  again only when something changed it: a blob edited in place shows "spec does not match its CID"
  at the next regeneration instead of stopping the page.
- `invocations/{incoming,active}/`: the deployment each waiting or running invocation names, from
  its `request.json`, remembered per entry by this process (a request never changes).

What it never shows: a request's body or headers, a response's body, headers or reason (all the
program's or the caller's business), and the sealed env (opened by executors only). Rows carry
states, HTTP status codes, times and the spec's public fields.
"""

from __future__ import annotations

import heapq
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cutor_spool.deployments.cid import parse_cid
from cutor_spool.deployments.errors import (
    BadSignature,
    BadSpec,
    BlobMismatch,
    DeploymentError,
    InvalidCid,
    TermsNotAccepted,
    UnknownCid,
)
from cutor_spool.deployments.requests import BUILD_RECORD, REQUEST
from cutor_spool.deployments.spec import load_deployment
from cutor_spool.deployments.store import Store
from cutor_spool.documents.deployment import DeploymentBuild, InvocationRequest, RequestKind, Response
from cutor_spool.documents.status import StatusDocument
from cutor_spool.errors import CutorError
from cutor_spool.layout import SpoolPaths
from cutor_spool.watcher.ids import split_active
from cutor_spool.web_status.charts import unix
from cutor_spool.web_status.index import STAMP_SETTLE, Index, Section, Signature, directory_stamp, scan
from cutor_spool.web_status.model import clip
from cutor_spool.web_status.reading import STATUS_LIMIT, open_dir, open_subdir, read_document, read_json

REQUEST_LIMIT = 1 << 20  # as the executor's: headers are capped at 64 KiB, the body is a file of its own
RECORD_LIMIT = 1 << 20
RESPONSE_LIMIT = 64 << 20  # the program's output, read once per invocation for its status code
RESPONSE = "response.json"
PAYMENT = "payment.json"  # runner/invocations/payment.py's PAYMENT (the runner is below: not imported)
PAYMENT_LIMIT = 64 << 10
INVOCATIONS_SHOWN = 20  # each deployment's newest invocations listed on the front page
REASON_LIMIT = 400

# What the page says instead of a spec that does not load (load_deployment's refusals).
PROBLEMS: tuple[tuple[type[DeploymentError], str], ...] = (
    (BlobMismatch, "spec does not match its CID"),
    (UnknownCid, "spec (or its bundle) not in the store"),
    (BadSignature, "the owner's signature does not verify"),
    (TermsNotAccepted, "the terms acceptance does not verify"),
    (BadSpec, "not a valid deployment spec"),
)


def _kind(request: object) -> str | None:
    return request.kind.value if isinstance(request, InvocationRequest) else None


def _deployment(request: object) -> str | None:
    """The CID an invocation names, if it is one (a client wrote it)."""
    if not isinstance(request, InvocationRequest):
        return None
    try:
        parse_cid(request.deployment)
    except InvalidCid:
        return None
    return request.deployment


def invocation_summary(entry: Path) -> dict[str, Any]:
    """One finished invocation (or build) as the index keeps it: no byte of its body or response
    but the status code."""
    with open_dir(entry) as entry_fd:
        request = read_document(entry_fd, REQUEST, REQUEST_LIMIT, InvocationRequest)
        with open_subdir(entry_fd, "result") as result_fd:
            status = read_document(result_fd, "status.json", STATUS_LIMIT, StatusDocument)
            response = read_document(result_fd, RESPONSE, RESPONSE_LIMIT, Response)
            payment = read_json(result_fd, PAYMENT, PAYMENT_LIMIT)
    found = status if isinstance(status, StatusDocument) else None
    finished = clip(found.states.get(found.state.value) or found.updated_at, 40) if found else None
    return {
        "name": entry.name,
        "kind": _kind(request),
        "deployment": _deployment(request),
        "state": found.state.value if found else "unknown",
        "outcome": found.outcome.value if found and found.outcome else None,
        "http_status": response.status if isinstance(response, Response) else None,
        "finished": finished,
        "finished_unix": unix(finished),
        "duration": _duration(found),
        **_payment(payment),
    }


def _duration(status: StatusDocument | None) -> float | None:
    """The run stage's wall time: what an invocation is charged for."""
    stage = status.stages.get("run") if status is not None else None
    return stage.wall_time if stage is not None else None


def _units(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _payment(payment: object) -> dict[str, Any]:
    """result/payment.json's {"payer", "held", "charged", "kind"}; Nones when there is none."""
    if not isinstance(payment, dict):
        return {"payer": None, "held": None, "charged": None, "payment": None}
    payer, kind = payment.get("payer"), payment.get("kind")
    return {
        "payer": clip(payer, 100) if isinstance(payer, str) else None,
        "held": _units(payment.get("held")),
        "charged": _units(payment.get("charged")),
        "payment": kind if kind in ("settle", "release") else None,
    }


def update_invocations(paths: SpoolPaths, index: Index, now: float) -> None:
    """Brings the index's `invocations` section up to date with `invocations/done/`, as
    `Generator.done` does for `done/` (entries there are final and arrive by renames)."""
    section, done_dir = index.invocations, paths.invocations.done
    stamp = directory_stamp(done_dir)
    if stamp is not None and stamp == section.directory:
        return
    scanned = scan(done_dir, section.sigs)
    changed, removed = section.changes(scanned)
    settled = stamp is not None and now - stamp[1] / 1e9 > STAMP_SETTLE
    if section.directory != (stamp if settled else None):
        section.directory = stamp if settled else None
        section.dirty = True
    for name in changed:
        section.put(name, scanned[name], invocation_summary(done_dir / name))
    for name in removed:
        section.remove(name)


def _spec_problem(exc: DeploymentError) -> str:
    for kind, text in PROBLEMS:
        if isinstance(exc, kind):
            return text
    return "the spec cannot be read"


def deployment_summary(paths: SpoolPaths, store: Store, cid: str) -> dict[str, Any]:
    """A deployment as the index keeps it: the spec's owner and time (the spec verified), its build."""
    owner = created = problem = None
    try:
        spec = load_deployment(store, cid).spec
        owner, created = clip(spec.owner, 80), clip(spec.created, 40)
    except DeploymentError as exc:
        problem = _spec_problem(exc)
    except CutorError:  # too large to be a spec, unreadable
        problem = "the spec cannot be read"
    with open_dir(paths.deployments / cid) as fd:
        record = read_document(fd, BUILD_RECORD, RECORD_LIMIT, DeploymentBuild)
    build = record if isinstance(record, DeploymentBuild) and record.deployment == cid else None
    return {
        "cid": cid,
        "owner": owner,
        "created": created,
        "problem": problem,
        "build_state": build.state.value if build else "unknown",
        "build_reason": clip(build.reason, REASON_LIMIT) if build else None,
        "build_at": clip((build.finished or build.created) if build else None, 40),
    }


def _blob_stamp(store: Store, cid: str) -> Signature:
    try:
        st = os.lstat(store.path(cid))
    except OSError:
        return [0, 0, 0, 0]
    return [st.st_ino, st.st_ctime_ns, st.st_mtime_ns, st.st_size]


def update_deployments(paths: SpoolPaths, index: Index) -> None:
    """Every deployment of `deployments/` into the index's `deployments` section. A record's
    directory changes when its build.json is replaced (a rename into it); its spec blob is
    immutable unless someone edits it, which changes its times: either re-reads the deployment."""
    section, store = index.deployments, Store(paths.root)
    found: dict[str, Signature] = {}
    for name, sig in scan(paths.deployments, section.sigs).items():
        try:
            parse_cid(name)
        except InvalidCid:
            continue  # not a deployment's directory
        found[name] = [*sig, *_blob_stamp(store, name)]
    changed, removed = section.changes(found)
    for cid in changed:
        section.put(cid, found[cid], deployment_summary(paths, store, cid))
    for cid in removed:
        section.remove(cid)


_WAITING: dict[tuple[str, int], str | None] = {}  # (entry name, inode) -> its deployment, for this process


def _waiting(directory: Path, active: bool) -> Iterable[str]:
    """The deployment of each invocation in `directory` (incoming/ or active/), builds left out."""
    try:
        with os.scandir(directory) as it:
            entries = [(e.name, e.inode()) for e in it if not e.name.startswith(".")]
    except OSError:
        return []
    out = []
    for name, inode in entries:
        if active and split_active(name) is None:
            continue
        key = (name, inode)
        if key not in _WAITING:
            with open_dir(directory / name) as fd:
                request = read_document(fd, REQUEST, REQUEST_LIMIT, InvocationRequest)
            if request is None and fd is None:
                continue  # moved on while we looked: not cached
            invoke = _kind(request) == RequestKind.INVOKE.value
            _WAITING[key] = _deployment(request) if invoke else None
        cid = _WAITING[key]
        if cid is not None:
            out.append(cid)
    return out


def _forget_waiting(present: set[tuple[str, int]]) -> None:
    for key in [k for k in _WAITING if k not in present]:
        del _WAITING[key]


def _present(*directories: Path) -> set[tuple[str, int]]:
    present = set()
    for directory in directories:
        try:
            with os.scandir(directory) as it:
                present |= {(e.name, e.inode()) for e in it}
        except OSError:
            continue
    return present


def _newest(section: Section) -> tuple[Counter[str], dict[str, list[dict[str, Any]]], Counter[str]]:
    """Per deployment: finished invocations, the newest INVOCATIONS_SHOWN summaries (newest
    first); and invocations by state. Reads the rows' columns in place (no dict per row but those
    shown: a spool may keep many invocations)."""
    kind, deployment, state, finished = (section.keys.index(k) for k in ("kind", "deployment", "state", "finished"))
    counts: Counter[str] = Counter()
    by_state: Counter[str] = Counter()
    names: dict[str, list[tuple[str, str]]] = {}
    for name, row in section.rows.items():
        if row[kind] != RequestKind.INVOKE.value:
            continue
        by_state[row[state]] += 1
        cid = row[deployment]
        if cid is None:
            continue
        counts[cid] += 1
        names.setdefault(cid, []).append((row[finished] or "", name))
    newest = {
        cid: [_shown(section.summary(name)) for _, name in heapq.nlargest(INVOCATIONS_SHOWN, found)]
        for cid, found in names.items()
    }
    return counts, newest, by_state


def _shown(summary: dict[str, Any]) -> dict[str, Any]:
    """An invocation as the page and status.json list it (amounts in micro-credits)."""
    keys = ("name", "state", "outcome", "http_status", "finished", "duration", "payer", "held", "charged")
    return {**{k: summary[k] for k in keys}, "released": summary["payment"] == "release"}


def view(paths: SpoolPaths, index: Index, shown: int) -> dict[str, Any]:
    """The section's rows (newest deployment first, `shown` of them) and counts, for the page and
    status.json alike."""
    queued = Counter(_waiting(paths.invocations.incoming, active=False))
    running = Counter(_waiting(paths.invocations.active, active=True))
    _forget_waiting(_present(paths.invocations.incoming, paths.invocations.active))
    counts, newest, by_state = _newest(index.invocations)
    ordered = sorted(index.deployments.summaries(), key=lambda d: (d["created"] or "", d["cid"]), reverse=True)
    rows = []
    for d in ordered[:shown]:
        cid = d["cid"]
        listed = newest.get(cid, [])
        previous = listed[0] if listed else None
        rows.append(
            {
                **d,
                "invocations": counts[cid],
                "queued": queued[cid],
                "running": running[cid],
                "last": None
                if previous is None
                else {k: previous[k] for k in ("name", "state", "outcome", "http_status", "finished")},
                "recent": listed,
            }
        )
    return {
        "total": len(ordered),
        "by_build_state": dict(Counter(d["build_state"] for d in ordered)),
        "invocations": {
            "queued": sum(queued.values()),
            "active": sum(running.values()),
            "finished": sum(by_state.values()),
            "by_state": dict(by_state),
        },
        "deployments": rows,
    }
