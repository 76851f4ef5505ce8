"""Client commands: init, submit, status, wait, list, validate, schema."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from cutor_spool.cli import batch as batches
from cutor_spool.cli.filters import parse_since, row_filter
from cutor_spool.cli.output import (
    EXIT_INVALID,
    EXIT_NOT_FOUND,
    EXIT_OK,
    color,
    describe_event,
    emit_json,
    exit_code,
    say,
    summary,
)
from cutor_spool.cli.report import build_report
from cutor_spool.config import SharedConfig, SpoolConfig, load_config
from cutor_spool.deployments.terms import write_default_terms
from cutor_spool.documents.schemas import DOCUMENTS, document_schema
from cutor_spool.documents.states import Outcome, State
from cutor_spool.documents.status import StatusDocument
from cutor_spool.layout import SpoolPaths
from cutor_spool.runner.intake import read_submission
from cutor_spool.runner.judge.graders import checked
from cutor_spool.sharing import GroupUnknown
from cutor_spool.submission import json_schema
from cutor_spool.watcher import client
from cutor_spool.web_status import queues

STATES = [s.value for s in State]
OUTCOMES = [o.value for o in Outcome]


def _warn_stale(paths: SpoolPaths) -> None:
    stale = client.stale_workers(paths)
    if stale:
        say(
            f"warning: {len(stale)} running worker(s) read spool.yaml before its last change and run the old one "
            f"until restarted: {', '.join(stale[:5])}{' ...' if len(stale) > 5 else ''}",
            err=True,
        )


def _paths(ctx: click.Context, *, must_exist: bool = True) -> SpoolPaths:
    paths = SpoolPaths(ctx.obj.spool)
    if must_exist and not paths.config.is_file():
        raise click.ClickException(f"{paths.root} is not a spool (run: cutor-spool --spool {paths.root} init)")
    if must_exist and not paths.exists():  # made by an older version: the folders it lacks (a new queue)
        try:
            paths.complete()
        except PermissionError:  # not ours to make (a shared spool's client): the workers will
            pass
    return paths


@click.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--shared",
    "submitters",
    metavar="GROUP",
    help="A spool for users who do not trust each other: GROUP's members may submit (docs/shared-spool.md).",
)
@click.option(
    "--operators",
    metavar="GROUP",
    default="root",
    show_default=True,
    help="With --shared: the group that may read every result and the status page.",
)
@click.pass_context
def init(ctx: click.Context, directory: Path | None, submitters: str | None, operators: str) -> None:
    """Create a spool (default: the --spool directory) with a commented spool.yaml.

    \b
    With --shared GROUP (as root): incoming/ is root:GROUP 1730 (drop, never list), every other
    directory root's, status/ the operators'; each claimed submission is readable by its
    submitter and the operators only. Run again to repair the modes; `cutor-spool doctor` checks.
    """
    paths = SpoolPaths(directory or ctx.obj.spool)
    shared = SharedConfig(submitters=submitters, operators=operators) if submitters else None
    if shared and os.geteuid() != 0:
        raise click.ClickException("init --shared must run as root: it gives the spool's directories to root")
    try:
        paths.init(shared=shared)
    except (GroupUnknown, PermissionError) as exc:
        raise click.ClickException(str(exc)) from exc
    write_default_terms(paths)  # the terms `deploy` shows (docs/deployments.md); an operator's are kept
    kind = f"shared by group {submitters}, operators {operators}; " if shared else ""
    say(f"spool ready at {paths.root} ({kind}config: {paths.config})")


def _print_event(ev: dict[str, Any]) -> None:
    stamp = str(ev.get("at", ""))[11:23]
    say(f"  {stamp}  {describe_event(ev)}", err=True)


def _wait_and_report(paths: SpoolPaths, entry_id: str, *, timeout: float | None, as_json: bool, progress: bool) -> int:
    status = client.follow(paths, entry_id, timeout=timeout, on_event=_print_event if progress else None)
    if status is None:
        say(f"{entry_id}: still not finished after {timeout}s", err=True)
        return exit_code(None)
    _show(paths, status, as_json=as_json)
    return exit_code(status)


def _submit_many(
    paths: SpoolPaths,
    directories: tuple[Path, ...],
    batch_file: Path | None,
    *,
    wait_: bool,
    timeout: float | None,
    as_json: bool,
    check: bool,
) -> int:
    config = load_config(paths.root)
    with batches.staging_dir() as staging:
        sources = batches.directories(directories)
        results = batches.drop_all(paths, sources, config=config, check=check)
        if batch_file is not None:
            lines = batches.batch_lines(batch_file, Path(staging))
            results += batches.drop_all(paths, lines, config=config, check=check)
    batches.report_drops(results, as_json=as_json, quiet=wait_)
    code = batches.set_code(results)
    if wait_:
        ids = [r.id for r in results if r.id and not r.problems]
        code = max(code, batches.wait_set(paths, ids, timeout=timeout, as_json=as_json))
    return code


def _show(paths: SpoolPaths, status: StatusDocument, *, as_json: bool) -> None:
    """The summary and, once it ended, the report (cli/report.py); `--json`: both as one object."""
    found = client.locate(paths, status.id) if status.terminal else None
    report = build_report(found.path, status) if found is not None else None
    if as_json:
        emit_json({**status.dump(), **({"report": report.to_json()} if report else {})})
        return
    say(summary(status))
    if report is not None:
        for line in report.lines(show_ok_stdout=sys.stdout.isatty()):
            say(line)


@click.command()
@click.argument("directories", nargs=-1, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--batch",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Also submit each line of this JSONL file: {id?, submission, files?} (see docs).",
)
@click.option("--id", "entry_id", help="Use this id (default: a fresh time-ordered one); one DIRECTORY only.")
@click.option("--wait", "wait_", is_flag=True, help="Follow it to its end; the exit code tells the outcome.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after this many seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option("--no-check", is_flag=True, help="Do not validate locally first (the executor still does).")
@click.pass_context
def submit(
    ctx: click.Context,
    directories: tuple[Path, ...],
    batch: Path | None,
    entry_id: str | None,
    wait_: bool,
    timeout: float | None,
    as_json: bool,
    no_check: bool,
) -> None:
    """Submit DIRECTORY: copy, fsync, mark ready and rename into incoming/ in one step.

    Several directories, or --batch, drop each on its own (a bad one is reported and does not stop
    the others); the exit code is then the highest of theirs, and --json prints a list.

    \b
    Exit codes: 0 submitted (with --wait: ended ok/accepted), 1 with --wait: a failed outcome
    (compile error, a limit, wrong answer...), 2 bad command line, 3 invalid (checked locally
    first, or by the executor), 4 error (the system gave up on it), 5 --timeout ran out first,
    7 cancelled (`cutor-spool cancel`).
    \b
    Example (CI):
      cutor-spool submit ./job --wait --json > result.json || echo "job failed: $?"
    """
    paths = _paths(ctx)
    if batch is not None or len(directories) != 1:
        if entry_id is not None:
            raise click.UsageError("--id names one submission: give one DIRECTORY and no --batch")
        if not directories and batch is None:
            raise click.UsageError("give a DIRECTORY (or several, or --batch FILE)")
        sys.exit(
            _submit_many(paths, directories, batch, wait_=wait_, timeout=timeout, as_json=as_json, check=not no_check)
        )
    directory = directories[0]
    config = load_config(paths.root)
    if not no_check:
        intake = checked(read_submission(directory, config))
        if intake.problems:
            for problem in intake.problems:
                say(f"invalid: {problem}", err=True)
            sys.exit(EXIT_INVALID)
    entry_id = client.submit(paths, directory, entry_id, private=config.shared is not None)
    if not wait_:
        emit_json({"id": entry_id, "state": "queued"}) if as_json else say(entry_id)
        return
    if not as_json:
        say(f"{entry_id}: queued", err=True)
    sys.exit(
        _wait_and_report(
            paths,
            entry_id,
            timeout=timeout,
            as_json=as_json,
            progress=(not as_json and sys.stderr.isatty()) or ctx.obj.verbose > 0,
        )
    )


@click.command()
@click.argument("entry_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print status.json, with the report once it ended.")
@click.pass_context
def status(ctx: click.Context, entry_id: str, as_json: bool) -> None:
    """Show where submission ID is and how it went."""
    paths = _paths(ctx)
    _warn_stale(paths)
    current = client.current_status(paths, entry_id)
    if current is None:
        say(f"{entry_id}: not in the spool", err=True)
        sys.exit(EXIT_NOT_FOUND)
    _show(paths, current, as_json=as_json)


@click.command()
@click.argument("entry_ids", metavar="ID...", nargs=-1, required=True)
@click.option("--timeout", type=float, default=None, help="Give up after this many seconds (exit 5).")
@click.option("--json", "as_json", is_flag=True, help="Print status.json with its report.")
@click.option("--progress/--no-progress", default=None, help="Show each event (default: on a terminal).")
@click.pass_context
def wait(
    ctx: click.Context, entry_ids: tuple[str, ...], timeout: float | None, as_json: bool, progress: bool | None
) -> None:
    """Wait for submission ID to finish; the exit code tells the outcome (see submit). Several
    IDs: each is shown as it ends, the exit code is the highest, --json prints a list."""
    paths = _paths(ctx)
    if len(entry_ids) > 1:
        sys.exit(batches.wait_set(paths, list(entry_ids), timeout=timeout, as_json=as_json))
    (entry_id,) = entry_ids
    if client.locate(paths, entry_id) is None:
        say(f"{entry_id}: not in the spool", err=True)
        sys.exit(EXIT_NOT_FOUND)
    show = sys.stderr.isatty() if progress is None else progress
    sys.exit(_wait_and_report(paths, entry_id, timeout=timeout, as_json=as_json, progress=show and not as_json))


@click.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option("--limit", type=int, default=20, show_default=True, help="How many recent results (after filters).")
@click.option("--state", "states", multiple=True, type=click.Choice(STATES), help="Only these states (repeatable).")
@click.option("--outcome", "outcomes", multiple=True, type=click.Choice(OUTCOMES), help="Only these outcomes.")
@click.option("--since", help="Only finished since then: a duration (90s, 30m, 2h, 7d) or an ISO 8601 time.")
@click.option("--prefix", default="", help="Only ids that begin with this.")
@click.pass_context
def list_(
    ctx: click.Context,
    as_json: bool,
    limit: int,
    states: tuple[str, ...],
    outcomes: tuple[str, ...],
    since: str | None,
    prefix: str,
) -> None:
    """What is queued, active and done, with each finished one's reason; filters combine.

    --json adds `queues` (per queue: depth, the oldest entry's age, and per lane) and `workers`
    (per kind: live and stale, by heartbeat), unfiltered: the figures an autoscaler acts on."""
    paths = _paths(ctx)
    _warn_stale(paths)
    keep = row_filter(states=set(states), outcomes=set(outcomes), since=parse_since(since), prefix=prefix)
    data = client.listing(paths, limit=limit, keep=keep)
    if as_json:  # and the autoscaling signal: depth per queue and lane, live workers per kind
        emit_json({**data, **queues.signal(paths)})
        return
    say(f"queued: {len(data['queued'])}")
    for item in data["queued"][:limit]:
        say(f"  {item['id']}")
    say(f"active: {len(data['active'])}")
    for item in data["active"]:
        say(f"  {item['id']}  {item['state']}  {item.get('worker') or ''}")
    say(f"done (latest {len(data['done'])}):")
    for item in data["done"]:
        outcome = item.get("outcome") or ""
        shown = color(outcome, outcome in ("ok", "accepted")) if outcome else ""
        reason = f"  {item['reason']}" if item.get("reason") else ""
        say(f"  {item['id']}  {item['state']}  {shown}{reason}")


@click.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help='Print {"valid": …, "errors": […]}.')
@click.pass_context
def validate(ctx: click.Context, directory: Path, as_json: bool) -> None:
    """Check a submission directory and list every problem at once (exit 3 if any)."""
    paths = SpoolPaths(ctx.obj.spool)
    config = load_config(paths.root) if paths.config.exists() else SpoolConfig()
    intake = checked(read_submission(directory, config))
    if as_json:
        emit_json({"valid": not intake.problems, "errors": [p.to_json() for p in intake.problems]})
    elif intake.problems:
        say(f"{directory}: {len(intake.problems)} problem(s)")
        for problem in intake.problems:
            say(f"  - {problem}")
    else:
        plan = intake.plan
        assert plan is not None
        kind = f"judged, {len(plan.submission.tests or [])} test(s)" if plan.judged else "run"
        if plan.submission.language is not None:
            kind += f", language {plan.submission.language}"
        say(f"{directory}: valid ({kind}; {len(plan.workdir_files) + len(plan.inline_files)} file(s) for /work)")
    sys.exit(EXIT_INVALID if intake.problems else EXIT_OK)


@click.command()
@click.argument("document", required=False, type=click.Choice(sorted(DOCUMENTS)))
@click.option("--spool-config", is_flag=True, help="The schema of spool.yaml instead of submission.yaml.")
@click.option(
    "--all",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write every schema into this directory (<name>.schema.json) instead of printing one.",
)
def schema(document: str | None, spool_config: bool, directory: Path | None) -> None:
    """Print the JSON Schema of submission.yaml (for editors), of spool.yaml, or of a document the
    spool writes (DOCUMENT: status, stage, dependencies, heartbeat, build), for clients to validate against.

    \b
    Examples:
      cutor-spool schema > submission.schema.json
      cutor-spool schema status > status.schema.json
      cutor-spool schema --all schemas/
    """
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        for name, value in _every_schema().items():
            path = directory / f"{name}.schema.json"
            path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
            say(str(path))
        return
    if document is not None:
        emit_json(document_schema(document))
        return
    emit_json(SpoolConfig.model_json_schema() if spool_config else json_schema())


def _every_schema() -> dict[str, dict[str, Any]]:
    return {
        "submission": json_schema(),
        "spool": SpoolConfig.model_json_schema(),
        **{name: document_schema(name) for name in DOCUMENTS},
    }


@click.command(name="watch-time", hidden=True)
@click.pass_context
def watch_time(ctx: click.Context) -> None:  # pragma: no cover - a debugging aid
    """Print the spool's filesystem clock against the local one."""
    from cutor_spool.watcher.clock import FsClock

    paths = _paths(ctx)
    fs = FsClock(paths.tmp, "cli").now()
    say(f"filesystem {fs:.3f}  local {time.time():.3f}  skew {time.time() - fs:+.3f}s")


commands: list[click.Command] = [init, submit, status, wait, list_, validate, schema, watch_time]
