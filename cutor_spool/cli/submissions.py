"""Client commands: init, submit, status, wait, list, validate, schema."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from cutor_spool.atomic import read_json
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
from cutor_spool.config import SpoolConfig, load_config
from cutor_spool.deployments.terms import write_default_terms
from cutor_spool.documents.schemas import DOCUMENTS, document_schema
from cutor_spool.documents.stage import StageDocument
from cutor_spool.documents.states import RESULT_DIR
from cutor_spool.layout import SpoolPaths
from cutor_spool.runner.intake import read_submission
from cutor_spool.runner.judge.graders import checked
from cutor_spool.submission import json_schema
from cutor_spool.watcher import client


def _paths(ctx: click.Context, *, must_exist: bool = True) -> SpoolPaths:
    paths = SpoolPaths(ctx.obj.spool)
    if must_exist and not paths.exists():
        raise click.ClickException(f"{paths.root} is not a spool (run: cutor-spool --spool {paths.root} init)")
    return paths


@click.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.pass_context
def init(ctx: click.Context, directory: Path | None) -> None:
    """Create a spool (default: the --spool directory) with a commented spool.yaml."""
    paths = SpoolPaths(directory or ctx.obj.spool)
    paths.init()
    write_default_terms(paths)  # the terms `deploy` shows (docs/deployments.md); an operator's are kept
    say(f"spool ready at {paths.root} (config: {paths.config})")


def _print_event(ev: dict[str, Any]) -> None:
    stamp = str(ev.get("at", ""))[11:23]
    say(f"  {stamp}  {describe_event(ev)}", err=True)


def _wait_and_report(paths: SpoolPaths, entry_id: str, *, timeout: float | None, as_json: bool, progress: bool) -> int:
    status = client.follow(paths, entry_id, timeout=timeout, on_event=_print_event if progress else None)
    if status is None:
        say(f"{entry_id}: still not finished after {timeout}s", err=True)
        return exit_code(None)
    if as_json:
        emit_json(status.dump())
    else:
        say(summary(status))
        found = client.locate(paths, entry_id)
        if found is not None and sys.stdout.isatty():
            run = _stage(found.path / RESULT_DIR / "run.json")
            if run is not None and run.stdout:
                say("--- stdout ---\n" + run.stdout.rstrip("\n"))
    return exit_code(status)


def _stage(path: Path) -> StageDocument | None:
    try:
        return StageDocument.read(read_json(path))
    except (OSError, ValueError):
        return None


@click.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--id", "entry_id", help="Use this id (default: a fresh time-ordered one).")
@click.option("--wait", "wait_", is_flag=True, help="Follow it to its end; the exit code tells the outcome.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after this many seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option("--no-check", is_flag=True, help="Do not validate locally first (the executor still does).")
@click.pass_context
def submit(
    ctx: click.Context,
    directory: Path,
    entry_id: str | None,
    wait_: bool,
    timeout: float | None,
    as_json: bool,
    no_check: bool,
) -> None:
    """Submit DIRECTORY: copy, fsync, mark ready and rename into incoming/ in one step.

    \b
    Exit codes with --wait: 0 ok/accepted, 1 failed outcome (compile error, limits, wrong
    answer...), 3 invalid, 4 error, 5 timed out.
    \b
    Example (CI):
      cutor-spool submit ./job --wait --json > result.json || echo "job failed: $?"
    """
    paths = _paths(ctx)
    if not no_check:
        intake = checked(read_submission(directory, load_config(paths.root)))
        if intake.problems:
            for problem in intake.problems:
                say(f"invalid: {problem}", err=True)
            sys.exit(EXIT_INVALID)
    entry_id = client.submit(paths, directory, entry_id)
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
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status(ctx: click.Context, entry_id: str, as_json: bool) -> None:
    """Show where submission ID is and how it went."""
    paths = _paths(ctx)
    current = client.current_status(paths, entry_id)
    if current is None:
        say(f"{entry_id}: not in the spool", err=True)
        sys.exit(EXIT_NOT_FOUND)
    emit_json(current.dump()) if as_json else say(summary(current))


@click.command()
@click.argument("entry_id", metavar="ID")
@click.option("--timeout", type=float, default=None)
@click.option("--json", "as_json", is_flag=True)
@click.option("--progress/--no-progress", default=None, help="Show each event (default: on a terminal).")
@click.pass_context
def wait(ctx: click.Context, entry_id: str, timeout: float | None, as_json: bool, progress: bool | None) -> None:
    """Wait for submission ID to finish; the exit code tells the outcome (see submit)."""
    paths = _paths(ctx)
    if client.locate(paths, entry_id) is None:
        say(f"{entry_id}: not in the spool", err=True)
        sys.exit(EXIT_NOT_FOUND)
    show = sys.stderr.isatty() if progress is None else progress
    sys.exit(_wait_and_report(paths, entry_id, timeout=timeout, as_json=as_json, progress=show and not as_json))


@click.command(name="list")
@click.option("--json", "as_json", is_flag=True)
@click.option("--limit", type=int, default=20, show_default=True, help="How many recent results.")
@click.pass_context
def list_(ctx: click.Context, as_json: bool, limit: int) -> None:
    """What is queued, active and done."""
    paths = _paths(ctx)
    data = client.listing(paths, limit=limit)
    if as_json:
        emit_json(data)
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
        say(f"  {item['id']}  {item['state']}  {color(outcome, outcome in ('ok', 'accepted')) if outcome else ''}")


@click.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
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
