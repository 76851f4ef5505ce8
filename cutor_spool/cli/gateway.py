"""`cutor-spool gateway`: the HTTP gateway to the spool's deployments (docs/gateway.md)."""

from __future__ import annotations

import sys

import click

from cutor_spool.config import load_config
from cutor_spool.deployments.store import Store
from cutor_spool.errors import ConfigError
from cutor_spool.gateway.app import GatewayApp
from cutor_spool.gateway.direct import DirectDoors
from cutor_spool.gateway.flow import Gateway
from cutor_spool.gateway.payments import SpoolPayments
from cutor_spool.gateway.server import bind, parse_listen, serve
from cutor_spool.gateway.waiting import SharedWaiter
from cutor_spool.layout import SpoolPaths
from cutor_spool.ledger import Ledger

EXIT_CONFIG = 78  # as the workers: restarting cannot fix it


@click.command("gateway")
@click.option("--listen", default="127.0.0.1:8080", show_default=True, help="HOST:PORT to listen on (port 0: any).")
@click.option(
    "--claim-timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds an invocation may wait while no executor takes any invocation (the queue does "
    "not move); then 503 and it is withdrawn.",
)
@click.option(
    "--queue-timeout",
    type=click.FloatRange(min=0.1),
    default=300.0,
    show_default=True,
    help="Seconds an invocation may wait in a queue that moves; then 503 and it is withdrawn.",
)
@click.option(
    "--max-queue",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Refuse new invocations (503, Retry-After) while this many wait unclaimed (0: no limit).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=None,
    help="Seconds to wait for an answer once claimed; then 504 "
    "(default: the spool's max_invoke_wall_time + build_wait + 30).",
)
@click.option(
    "--graceful",
    type=click.IntRange(min=0),
    default=30,
    show_default=True,
    help="Seconds in-flight requests get on SIGTERM.",
)
@click.option(
    "--direct/--no-direct",
    default=True,
    show_default=True,
    help="Send warm deployments' requests straight to the executors of this host (docs/gateway.md).",
)
@click.option("--poll", is_flag=True, help="Poll the spool instead of inotify (the automatic choice on NFS).")
@click.pass_context
def gateway(
    ctx: click.Context,
    listen: str,
    claim_timeout: float,
    queue_timeout: float,
    max_queue: int,
    timeout: float | None,
    graceful: int,
    direct: bool,
    poll: bool,
) -> None:
    """Serve the spool's deployments over HTTP: POST /CID (any method, any /CID/PATH) invokes.

    \b
      cutor-spool gateway --spool /var/spool/cutor-spool --listen 0.0.0.0:8080
      curl --data-binary @input.json http://localhost:8080/bafybei…/
    """
    paths = SpoolPaths(ctx.find_root().obj.spool)
    if not paths.exists():
        click.echo(f"configuration error: {paths.root} is not a spool (run: cutor-spool init)", err=True)
        sys.exit(EXIT_CONFIG)
    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--listen") from None
    try:
        config = load_config(paths.root)
    except ConfigError as exc:
        click.echo(f"configuration error: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    settings = config.deployments
    if timeout is None:
        timeout = settings.max_invoke_wall_time + settings.build_wait + 30.0
    try:
        sock = bind(host, port)
    except OSError as exc:
        click.echo(f"cannot listen on {listen}: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    waiter = SharedWaiter(paths, poll=True if poll else None)
    payments = SpoolPayments(Store(paths.root), Ledger(paths.root), config)
    doors = DirectDoors(paths) if direct else None
    flow = Gateway(
        paths,
        settings.max_body,
        waiter,
        claim_timeout,
        timeout,
        payments,
        direct=doors,
        queue_timeout=queue_timeout,
        max_queue=max_queue,
    )
    app = GatewayApp(flow)
    serve(app, sock, graceful=graceful)


commands: list[click.Command] = [gateway]
