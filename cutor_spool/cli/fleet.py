"""`cutor-spool workers`: the workers of a spool by their heartbeat, and a probe for one host's.

`--check` is what a container's liveness and readiness probes (deploy/kubernetes/) and a Nomad
check (deploy/nomad/) run: exit 0 while a worker of this host (the `--host` its executor records,
by default the host name: a pod's name) has a fresh heartbeat, 1 when none has. Freshness is the
page's rule (web_status/live.py): a heartbeat within three of the worker's intervals, on the
filesystem's clock.
"""

from __future__ import annotations

import socket
import sys

import click

from cutor_spool.cli.output import emit_json, say
from cutor_spool.layout import SpoolPaths
from cutor_spool.web_status import live
from cutor_spool.web_status.queues import spool_now


@click.command()
@click.option("--kind", type=click.Choice(["executor", "builder"]), default=None, help="Only workers of this kind.")
@click.option("--host", default=None, help="Only workers that record this host (--check: default this host's name).")
@click.option("--check", is_flag=True, help="Exit 1 unless a matching worker has a fresh heartbeat (for probes).")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_context
def workers(ctx: click.Context, kind: str | None, host: str | None, check: bool, as_json: bool) -> None:
    """The workers of the spool (a heartbeat file each in SPOOL/workers/), alive ones first.

    \b
    Examples:
      cutor-spool workers
      cutor-spool workers --check --kind executor     # a probe: is this host's executor alive?
    """
    paths = SpoolPaths(ctx.obj.spool)
    if check and host is None:
        host = socket.gethostname()
    found = [
        w
        for w in live.workers(paths.workers, spool_now(paths))
        if (kind is None or w.kind == kind) and (host is None or w.host == host)
    ]
    if as_json:
        emit_json(
            [
                {"worker": w.id, "kind": w.kind, "host": w.host, "alive": w.alive, "age_seconds": round(w.age, 3)}
                for w in found
            ]
        )
    elif not check:
        for w in found:
            say(f"{w.id}  {w.kind}  {w.host}  {'alive' if w.alive else 'stale'}  {w.age:.1f}s ago")
    if check and not any(w.alive for w in found):
        say(f"no {kind or 'worker'} of host {host} has a fresh heartbeat in {paths.workers}", err=True)
        sys.exit(1)


commands: list[click.Command] = [workers]
