"""Commands that change what the spool holds: prune."""

from __future__ import annotations

import click

from cutor_spool.cli.output import emit_json, human_size, say
from cutor_spool.cli.submissions import _paths
from cutor_spool.config import load_config
from cutor_spool.units import parse_duration
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


commands: list[click.Command] = [prune]
