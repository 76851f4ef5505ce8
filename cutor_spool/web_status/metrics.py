"""`status/status.json` for machines and `status/metrics.prom` for Prometheus.

metrics.prom is written from the very dict that becomes status.json, so the two never disagree. It
is in Prometheus' text exposition format (version 0.0.4) for node_exporter's textfile collector:
point `--collector.textfile.directory` at the spool's `status/` (the collector reads only `*.prom`
files, and ours is replaced atomically, as the collector's documentation asks; the temporary names
of `atomic.py` do not end in `.prom`). Every state has a series, zeros included, so that a rate or
an alert never sees a series vanish when a count drops to nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from cutor_spool.ledger.models import UNITS_PER_CREDIT
from cutor_spool.web_status import live
from cutor_spool.web_status.index import Index

# Every state a submission can be in, in flow order (documents.states.State), queued first.
STATES = (
    "queued",
    "claimed",
    "installing_dependencies",
    "dependencies_installed",
    "compiling",
    "compiled",
    "running",
    "testing",
    "done",
    "invalid",
    "error",
    "cancelled",
)
OUTCOMES = (
    "ok",
    "compile_error",
    "dependency_failure",
    "runtime_error",
    "time_limit",
    "memory_limit",
    "output_limit",
    "accepted",
    "partial",
    "rejected",
)

BUILD_STATES = ("pending", "ready", "failed", "unknown")
INVOCATION_STATES = ("queued", "active", "done", "invalid", "error", "cancelled")


def machine_status(
    header: dict[str, Any],
    index: Index,
    queue: live.Queue,
    active: list[live.ActiveEntry],
    workers: list[live.Worker],
    recent: list[dict[str, Any]],
    builds: dict[str, Any],
    deployed: dict[str, Any],
) -> dict[str, Any]:
    """status.json; `header` gives generated_at, generated_unix, generated_by and spool."""
    states, outcomes = index.done.column("state"), index.done.column("outcome")
    by_state: Counter[str] = Counter(dict.fromkeys(STATES, 0))
    by_state["queued"] = queue.length
    by_state.update(a.state for a in active)
    by_state.update(states)
    by_outcome = Counter(o for s, o in zip(states, outcomes, strict=True) if s == "done" and o)
    return {
        "format": 1,
        "generated_at": header["generated_at"],
        "generated_unix": header["generated_unix"],
        "generated_by": header["generated_by"],
        "generation_seconds": 0.0,
        "spool": header["spool"],
        "counts": {
            "queued": queue.length,
            "active": len(active),
            "finished": len(states),
            "by_state": dict(by_state),
            "by_outcome": dict(sorted(by_outcome.items())),
        },
        "queue": {
            "length": queue.length,
            "oldest_age_seconds": None if queue.oldest_age is None else round(queue.oldest_age, 3),
            "first": [name for name, _ in queue.first],
        },
        "active": [
            {"id": a.id, "state": a.state, "since": a.since, "attempt": a.attempt, "worker": a.worker, "host": a.host}
            for a in active
        ],
        "workers": [
            {
                "worker": w.id,
                "kind": w.kind,
                "host": w.host,
                "pid": w.pid,
                "alive": w.alive,
                "heartbeat_age_seconds": round(w.age, 3),
                "heartbeat_interval": w.interval,
                "processed": w.processed,
                "version": w.version,
                "current": w.current,
                # Why an executor's host cannot run stages, while it has stopped claiming (health.py).
                "sandbox": w.info.get("sandbox"),
                "unexpected_errors": w.unexpected_errors,
            }
            for w in workers
        ],
        "recent": recent,
        "builds": builds,
        # deployments.view: counts, and the newest deployments (no body, header or secret of any).
        "deployments": deployed["deployments"],
        "deployment_counts": {k: v for k, v in deployed.items() if k != "deployments"},
    }


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float | int | bool) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


class Exposition:
    """Builds the text format: each family once, HELP and TYPE first, then its samples."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(
        self, name: str, kind: str, help_text: str, samples: Iterable[tuple[dict[str, Any], float | int | bool]]
    ) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            if labels:
                inner = ",".join(f'{key}="{_label(val)}"' for key, val in labels.items())
                self.lines.append(f"{name}{{{inner}}} {_number(value)}")
            else:
                self.lines.append(f"{name} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _per_worker(workers: list[dict[str, Any]], key: str) -> Iterable[tuple[dict[str, Any], int]]:
    """A number of each worker's entry in status.json (0 when missing), labelled by worker."""
    return (({"worker": w["worker"], "kind": w["kind"], "host": w["host"]}, w.get(key) or 0) for w in workers)


def _deployments(out: Exposition, deployed: dict[str, Any]) -> None:
    """Deployments by build state, invocations by state (deployments.view's counts)."""
    built = deployed["by_build_state"]
    out.family(
        "cutor_spool_deployments",
        "gauge",
        "Deployments in deployments/ by the state of their build (unknown: no readable build record).",
        (({"state": s}, built.get(s, 0)) for s in [*BUILD_STATES, *sorted(set(built) - set(BUILD_STATES))]),
    )
    invocations = deployed["invocations"]
    by_state = {"queued": invocations["queued"], "active": invocations["active"], **invocations["by_state"]}
    states = [*INVOCATION_STATES, *sorted(set(by_state) - set(INVOCATION_STATES))]
    out.family(
        "cutor_spool_invocations",
        "gauge",
        "Invocations of deployments by state: queued, active, and the final states in invocations/done/.",
        (({"state": s}, by_state.get(s, 0)) for s in states),
    )


def _queues(out: Exposition, queues: dict[str, Any]) -> None:
    """The autoscaling signal (queues.py): depth and oldest age per queue and lane."""
    lanes = [(q, lane, v) for q, each in queues.items() for lane, v in each["lanes"].items()]
    out.family(
        "cutor_spool_queue_depth",
        "gauge",
        "Entries waiting in each queue's incoming/, by lane (builds and invocations have the one lane normal).",
        (({"queue": q, "lane": lane}, v["depth"]) for q, lane, v in lanes),
    )
    out.family(
        "cutor_spool_queue_lane_oldest_age_seconds",
        "gauge",
        "How long the oldest entry of each queue and lane has waited (0 when the lane is empty).",
        (({"queue": q, "lane": lane}, v["oldest_age_seconds"] or 0.0) for q, lane, v in lanes),
    )


def _ledger(out: Exposition, totals: dict[str, int]) -> None:
    """Totals over the ledger's accounts (ledger.view): never a series per account, whose number
    has no bound."""
    out.family(
        "cutor_spool_ledger_accounts",
        "gauge",
        "Accounts in ledger/accounts/, by whether the page could read their journal.",
        [
            ({"readable": "true"}, totals["accounts"] - totals["unreadable"]),
            ({"readable": "false"}, totals["unreadable"]),
        ],
    )
    out.family(
        "cutor_spool_ledger_credits",
        "gauge",
        "Sums over the readable accounts, in credits: deposited, charged, held by live holds, available.",
        (({"total": k}, totals[k] / UNITS_PER_CREDIT) for k in ("deposited", "charged", "held", "available")),
    )


def prometheus(status: dict[str, Any]) -> str:
    counts = status["counts"]
    by_state: dict[str, int] = counts["by_state"]
    out = Exposition()
    states = list(STATES) + sorted(s for s in by_state if s not in STATES)
    out.family(
        "cutor_spool_submissions",
        "gauge",
        "Submissions in the spool by state: queued, each active state, and the final states in done/.",
        (({"state": s}, by_state.get(s, 0)) for s in states),
    )
    finished: dict[str, int] = counts["by_outcome"]
    outcomes = list(OUTCOMES) + sorted(o for o in finished if o not in OUTCOMES)
    out.family(
        "cutor_spool_outcomes",
        "gauge",
        "Submissions in done/ in state done, by outcome.",
        (({"outcome": o}, finished.get(o, 0)) for o in outcomes),
    )
    queue = status["queue"]
    out.family(
        "cutor_spool_queue_oldest_age_seconds",
        "gauge",
        "How long the oldest queued submission has waited (0 when the queue is empty).",
        [({}, queue["oldest_age_seconds"] or 0.0)],
    )
    _queues(out, status["queues"])
    workers = status["workers"]
    kinds = sorted({w["kind"] for w in workers} | {"executor", "builder"})
    out.family(
        "cutor_spool_workers",
        "gauge",
        "Workers with a heartbeat file in workers/, by kind and liveness (alive: a fresh heartbeat).",
        (
            ({"kind": k, "alive": alive}, sum(1 for w in workers if w["kind"] == k and w["alive"] == (alive == "true")))
            for k in kinds
            for alive in ("true", "false")
        ),
    )
    out.family(
        "cutor_spool_worker_heartbeat_age_seconds",
        "gauge",
        "Seconds since each worker's last heartbeat, on the spool's filesystem clock.",
        (({"worker": w["worker"], "kind": w["kind"], "host": w["host"]}, w["heartbeat_age_seconds"]) for w in workers),
    )
    out.family(
        "cutor_spool_worker_busy",
        "gauge",
        "Submissions or builds each worker is working on.",
        (({"worker": w["worker"], "kind": w["kind"], "host": w["host"]}, len(w["current"])) for w in workers),
    )
    out.family(
        "cutor_spool_worker_paused",
        "gauge",
        "1 while a worker claims nothing because its host cannot run stages (a failed probe stage).",
        (({"worker": w["worker"], "kind": w["kind"], "host": w["host"]}, bool(w.get("sandbox"))) for w in workers),
    )
    out.family(
        "cutor_spool_worker_unexpected_errors_total",
        "counter",
        "Programming errors each worker met since it started (the last one is in its heartbeat file).",
        _per_worker(workers, "unexpected_errors"),
    )
    builds = status["builds"]
    out.family(
        "cutor_spool_builds",
        "gauge",
        "Environment builds by state (done: cached environments).",
        (({"state": s}, builds[s]) for s in ("queued", "active", "done")),
    )
    out.family(
        "cutor_spool_environments_bytes",
        "gauge",
        "Total closure size of the cached environments, as their build records state it.",
        [({}, sum(e["size"] or 0 for e in builds["environments"]))],
    )
    _deployments(out, status["deployment_counts"])
    _ledger(out, status["ledger"]["totals"])
    out.family(
        "cutor_spool_status_generated_timestamp_seconds",
        "gauge",
        "When this file was generated (Unix time).",
        [({}, status["generated_unix"])],
    )
    out.family(
        "cutor_spool_status_generation_seconds",
        "gauge",
        "How long generating the status page took.",
        [({}, status["generation_seconds"])],
    )
    return out.text()
