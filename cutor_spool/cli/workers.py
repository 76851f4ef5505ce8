"""Worker commands: executor (and, as their issues land, builder, status-page, packages, gc)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from cutor_spool.config import BackendName
from cutor_spool.runner.slots import DEFAULT_STATE_DIR
from cutor_spool.units import parse_duration
from cutor_spool.watcher.worker import QueueWorker
from cutor_spool.web_status.job import StatusPageJob


def with_status_page(worker: QueueWorker[Any]) -> QueueWorker[Any]:
    """Every worker regenerates the status page, throttled across all workers of the spool, off its
    maintenance thread's critical path."""
    worker.maintenance.periodic.append(
        StatusPageJob(
            worker.paths, worker.config.status_page, worker.maintenance.clock.now, generator=worker.identity.worker_id
        )
    )
    return worker


F = TypeVar("F", bound=Callable[..., Any])


def parse_duration_option(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    try:
        return None if value is None else parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def pilot_options(command: F) -> F:
    """`--exit-when-idle` and `--max-jobs`: a worker that a batch engine starts as a job and that
    ends by itself, exit status 0, with nothing handed back (watcher/pilot.py)."""
    command = click.option(
        "--max-jobs",
        type=click.IntRange(1),
        default=None,
        help="Pilot: after N claims (of every queue this process serves), claim no more, let them finish, and exit 0.",
    )(command)
    return click.option(
        "--exit-when-idle",
        metavar="DURATION",
        callback=parse_duration_option,
        default=None,
        help="Pilot: exit 0 once nothing was claimed and nothing ran for DURATION (30s, 5m).",
    )(command)


def as_pilot(worker: QueueWorker[Any], exit_when_idle: float | None, max_jobs: int | None) -> QueueWorker[Any]:
    worker.pilot.configure(exit_when_idle=exit_when_idle, max_jobs=max_jobs)
    if worker.pilot.limited:  # shown in its heartbeat, for the page and `cutor-spool workers`
        worker.maintenance.info["pilot"] = {"exit_when_idle": exit_when_idle, "max_jobs": max_jobs}
    return worker


@click.command()
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(1, 1024),
    default=1,
    show_default=True,
    help="Submissions run at once by this worker.",
)
@click.option(
    "--poll/--inotify",
    default=None,
    help="Find work by polling alone (default: automatic, polling on NFS and other network filesystems).",
)
@click.option(
    "--backend",
    type=click.Choice([b.value for b in BackendName]),
    default=None,
    help="Sandbox backend (default: spool.yaml's `backend`).",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_STATE_DIR,
    show_default=True,
    help="Per-host state: slot locks and work areas (local disk, not the spool).",
)
@click.option(
    "--invocations",
    type=click.IntRange(0, 1024),
    default=None,
    help="Deployments' builds and invocations run at once by this process, besides its submissions "
    "(default: as --concurrency; 0: serve submissions only).",
)
@click.option(
    "--server-key",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The server's private key file, to open deployments' sealed env (default: spool.yaml's "
    "deployments.server_key). Outside the spool.",
)
@click.option("--host", default=None, help="Host name recorded in leases (default: this host's).")
@click.option(
    "--grace",
    type=float,
    default=30.0,
    show_default=True,
    help="On SIGTERM, seconds to let current work finish before handing it back.",
)
@pilot_options
@click.pass_context
def executor(
    ctx: click.Context,
    concurrency: int,
    poll: bool | None,
    backend: str | None,
    state_dir: Path,
    invocations: int | None,
    server_key: Path | None,
    host: str | None,
    grace: float,
    exit_when_idle: float | None,
    max_jobs: int | None,
) -> None:
    """Claim submissions and run them, until SIGTERM (must run as root; jobs never do).

    The same process builds and invokes deployments (the invocations queue), with the same sandbox
    slots: one command per host serves every queue of the executor.

    SIGTERM finishes current work (or hands it back after --grace); a second SIGTERM hands it back
    at once. SIGKILL loses nothing: the lease expires and another worker takes the submission.
    A pilot (--exit-when-idle, --max-jobs: a batch engine's job, `cutor-spool slurm`) exits 0 by
    itself once its work is over.
    """
    from cutor_spool.builder.environments import NixEnvironments
    from cutor_spool.runner.executor import Executor
    from cutor_spool.runner.invocations.worker import InvocationWorker
    from cutor_spool.runner.slots import become_subreaper

    become_subreaper()  # a sandbox's orphaned init comes to this process, which reaps it (docs/security.md)
    worker = Executor(
        ctx.obj.spool,
        concurrency=concurrency,
        poll=poll,
        backend=BackendName(backend) if backend else None,
        state_dir=state_dir,
        host=host or socket.gethostname(),
        grace=grace,
        environments=lambda paths, config, poll: NixEnvironments(paths, config, poll=poll),
    )
    as_pilot(worker, exit_when_idle, max_jobs)  # before its companion, which shares the pilot
    threads = concurrency if invocations is None else invocations
    if threads:
        worker.companions.append(InvocationWorker(worker, concurrency=threads, server_key=server_key))
    with_status_page(worker).run()


commands: list[click.Command] = [executor]
