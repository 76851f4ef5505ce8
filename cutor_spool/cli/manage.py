"""Commands that change what the spool holds: cancel, rerun, prune."""

from __future__ import annotations

import os
import pwd
import sys
import time
from pathlib import Path

import click

from cutor_spool.cli.batch import wait_set
from cutor_spool.cli.output import EXIT_NOT_FOUND, EXIT_OK, emit_json, exit_code, human_size, say, summary
from cutor_spool.cli.submissions import _paths
from cutor_spool.config import load_config
from cutor_spool.documents.states import State
from cutor_spool.units import parse_duration
from cutor_spool.watcher import client
from cutor_spool.watcher import rerun as reruns
from cutor_spool.watcher.cancel import request_cancel
from cutor_spool.watcher.claim import iso
from cutor_spool.watcher.clock import FsClock
from cutor_spool.watcher.prune import prune as prune_done


def _duration(_ctx: click.Context, _param: click.Parameter, value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.option("--older-than", required=True, callback=_duration, help="Remove those that ended longer ago: 30d, 12h.")
@click.option("--keep-failed", is_flag=True, help="Keep those that did not end done with outcome ok or accepted.")
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@click.option("--json", "as_json", is_flag=True, help="Print what was (or would be) removed as JSON.")
@click.pass_context
def prune(ctx: click.Context, older_than: float, keep_failed: bool, dry_run: bool, as_json: bool) -> None:
    """Remove finished submissions from done/, safely while workers run (also on NFS).

    Ages are judged by the spool's filesystem clock. The status page drops their pages at its next
    regeneration (done here too when the page is enabled). spool.yaml's `retention:` makes the
    workers do this themselves.
    """
    paths = _paths(ctx)
    pruned = prune_done(paths, older_than=older_than, keep_failed=keep_failed, dry_run=dry_run)
    config = load_config(paths.root)
    if pruned.removed and not dry_run and config.status_page.enabled:
        from cutor_spool.web_status import regenerate

        regenerate(paths, config.status_page, now=FsClock(paths.tmp, "prune-page").now, generator="cutor-spool prune")
    if as_json:
        emit_json(
            {"removed": pruned.removed, "kept_failed": pruned.kept_failed, "bytes": pruned.freed, "dry_run": dry_run}
        )
        return
    verb = "would remove" if dry_run else "removed"
    kept = f"; kept {pruned.kept_failed} that failed" if keep_failed else ""
    say(f"{verb} {len(pruned.removed)} finished submission(s), {human_size(pruned.freed)}{kept}")


@click.command()
@click.argument("entry_id", metavar="ID")
@click.option("--wait", "wait_", is_flag=True, help="Follow it until it has ended.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after this many seconds (exit 5).")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@click.pass_context
def cancel(ctx: click.Context, entry_id: str, wait_: bool, timeout: float | None, as_json: bool) -> None:
    """Stop submission ID, queued or running: it ends `cancelled` (who asked, and when).

    \b
    A worker honours the request when it claims the submission, or within one heartbeat while it
    runs (its sandbox is killed; what it wrote so far is kept). Only its submitter or root may
    cancel it. Cancelling twice, or after the end, changes nothing and says so (exit 0).
    Exit codes: 0 requested (with --wait: it ended cancelled) or nothing to do, 1 not allowed,
    5 --timeout ran out, 6 no such id; with --wait, an end other than cancelled gives its own code
    as `wait` does.
    """
    paths = _paths(ctx)
    found = client.locate(paths, entry_id)
    if found is None:
        _done(as_json, {"id": entry_id, "result": "not_found"}, f"{entry_id}: not in the spool", EXIT_NOT_FOUND)
    assert found is not None
    current = client.current_status(paths, entry_id)
    if found.where == "done" or (current is not None and current.terminal):
        state = current.state if current else "done"
        _done(
            as_json,
            {"id": entry_id, "result": "already_ended", "state": str(state)},
            f"{entry_id}: already ended ({state}); nothing to cancel",
            EXIT_OK,
        )
    submitter = current.submitter if current and current.submitter is not None else _owner(found.path)
    uid = os.getuid()
    if uid != 0 and submitter is not None and submitter != uid:
        _done(
            as_json,
            {"id": entry_id, "result": "not_allowed"},
            f"{entry_id}: only its submitter (uid {submitter}) or root may cancel it",
            1,
        )
    paths.cancels.mkdir(exist_ok=True)
    fresh = request_cancel(paths.cancels, entry_id, uid=uid, by=_who(uid), at=iso(time.time()))
    if not wait_:
        result = "requested" if fresh else "already_requested"
        message = "cancel requested" if fresh else "a cancel was already requested"
        _done(
            as_json,
            {"id": entry_id, "result": result},
            f"{entry_id}: {message}; a worker stops it at its next heartbeat",
            EXIT_OK,
        )
    status = client.follow(paths, entry_id, timeout=timeout)
    if as_json:
        emit_json(status.dump() if status else {"id": entry_id, "result": "timeout"})
    else:
        say(summary(status) if status else f"{entry_id}: still not ended after {timeout}s")
    sys.exit(EXIT_OK if status is not None and status.state == State.CANCELLED else exit_code(status))


def _done(as_json: bool, data: dict[str, str], message: str, code: int) -> None:
    emit_json(data) if as_json else say(message, err=code != EXIT_OK)
    sys.exit(code)


def _owner(path: Path) -> int | None:
    try:
        return os.lstat(path).st_uid
    except OSError:
        return None


def _who(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


@click.command()
@click.argument("entry_id", metavar="ID", required=False)
@click.option("--as", "new_id", help="The rerun's id (default: ID-r1, ID-r2, ...).")
@click.option(
    "--problem",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Rejudge every finished submission of the problem in this directory, with its current tests.",
)
@click.option("--wait", "wait_", is_flag=True, help="Follow the rerun(s) to the end; the exit code as `wait`'s.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after this many seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the new id(s) (with --wait: the results) as JSON.")
@click.pass_context
def rerun(
    ctx: click.Context,
    entry_id: str | None,
    new_id: str | None,
    problem: Path | None,
    wait_: bool,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Run finished submission ID again (the old result stays; the new one's status.json links to
    it as `rerun_of`), or with --problem DIR rejudge every submission of a problem.

    \b
    DIR is the problem as a submission.yaml with `problem: NAME`, its tests (checker, subtasks,
    scoring, limits) and their files. Each finished submission that names the problem is run
    again with its own solution and the problem's current judging (docs/judge.md, "Rejudging").
    """
    paths = _paths(ctx)
    if (entry_id is None) == (problem is None):
        raise click.UsageError("give an ID, or --problem DIR")
    if problem is not None and new_id is not None:
        raise click.UsageError("--as names one rerun; --problem makes one per submission")
    if problem is None:
        assert entry_id is not None
        pairs = [(entry_id, reruns.rerun(paths, entry_id, new_id=new_id))]
    else:
        name = reruns.problem_name(problem)
        pairs = [(old, reruns.rerun(paths, old, problem=problem)) for old in reruns.submissions_of(paths, name)]
        if not pairs:
            say(f"no finished submission of problem {name!r} in the spool", err=True)
    if not wait_:
        if as_json:
            emit_json([{"rerun_of": old, "id": new} for old, new in pairs])
        else:
            for old, new in pairs:
                say(f"{new}  (rerun of {old})")
        return
    sys.exit(wait_set(paths, [new for _old, new in pairs], timeout=timeout, as_json=as_json))


commands: list[click.Command] = [cancel, rerun, prune]
