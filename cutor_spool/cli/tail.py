"""`cutor-spool tail ID`: a submission's output so far (runner/live.py), and with --follow until
it ends."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from cutor_spool.cli.output import EXIT_NOT_FOUND
from cutor_spool.cli.submissions import _paths
from cutor_spool.documents.states import RESULT_DIR
from cutor_spool.layout import SpoolPaths
from cutor_spool.runner.live import LIVE_DIR
from cutor_spool.watcher import client

STAGES = ("run", "compile")  # the latest first


def _live(entry: Path) -> dict[str, Any] | None:
    """The newest live view of the entry's running stage."""
    found = []
    for stage in STAGES:
        try:
            found.append(json.loads((entry / RESULT_DIR / LIVE_DIR / f"{stage}.json").read_text()))
        except (OSError, ValueError):
            continue
    return max(found, key=lambda d: d.get("at", 0), default=None)


def _final(entry: Path) -> tuple[str, str] | None:
    """(stage, its whole output as kept) of the last stage that ran."""
    for stage in STAGES:
        try:
            doc = json.loads((entry / RESULT_DIR / f"{stage}.json").read_text())
        except (OSError, ValueError):
            continue
        return stage, str(doc.get("output") or "")
    return None


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


@click.command()
@click.argument("entry_id", metavar="ID")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output until the submission ends.")
@click.pass_context
def tail(ctx: click.Context, entry_id: str, follow: bool) -> None:
    """Print submission ID's output so far (its compile or run stage, stdout and stderr as they
    came, the last 64 KiB while it runs); with --follow, until it ends."""
    paths = _paths(ctx)
    if client.locate(paths, entry_id) is None:
        click.echo(f"{entry_id}: not in the spool", err=True)
        sys.exit(EXIT_NOT_FOUND)
    sys.exit(_follow(paths, entry_id, follow))


def _follow(paths: SpoolPaths, entry_id: str, follow: bool) -> int:
    printed: dict[str, int] = {}  # stage -> bytes of it printed
    while True:
        found = client.locate(paths, entry_id)
        if found is None:
            return EXIT_NOT_FOUND
        if found.where == "done":
            final = _final(found.path)
            if final is not None:
                stage, output = final
                data = output.encode()
                _write(data[printed.get(stage, 0) :].decode(errors="replace"))
            return 0
        live = _live(found.path)
        if live is not None:
            stage, total, text = live["stage"], int(live["bytes"]), str(live["tail"])
            data = text.encode()
            new = total - printed.get(stage, 0)
            if new > len(data):
                _write(f"[... {new - len(data)} bytes not shown ...]\n")
            if new > 0:
                _write(data[-min(new, len(data)) :].decode(errors="replace"))
            printed[stage] = total
        if not follow:
            return 0
        time.sleep(0.25)


commands: list[click.Command] = [tail]
