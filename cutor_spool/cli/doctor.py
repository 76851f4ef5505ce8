"""`cutor-spool doctor`: what is unsafe about a spool's permissions (docs/shared-spool.md), and
whether its filesystem is known to be slow for it (watcher/spool_fs.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cutor_spool.cli.output import emit_json, say
from cutor_spool.config import load_config
from cutor_spool.errors import ConfigError
from cutor_spool.watcher import spool_fs
from cutor_spool.watcher.doctor import NOTE, UNSAFE, Finding, as_json, examine


def _shared(root: Path) -> bool:
    try:
        return load_config(root).shared is not None
    except ConfigError:
        return False


@click.command()
@click.argument("spool_dir", metavar="[SPOOL]", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json_", is_flag=True, help="Print the findings as JSON.")
@click.pass_context
def doctor(ctx: click.Context, spool_dir: Path | None, as_json_: bool) -> None:
    """Check a spool's owners and modes (default: the --spool directory); exit 1 if anything is unsafe.

    \b
    Checks: who may write incoming/ and whether it has the sticky bit; directories, spool.yaml,
    workers/, keys/, cas/ and builds/cache/ writable by anyone but root; private keys inside the
    spool; in a shared spool (init --shared), results and the page readable by users other than
    their submitter and the operators, and whether the filesystem has the ACLs that let a
    submitter read its own result; and, as a note, a filesystem known to be slow for a spool
    (ext4 without a journal). Each finding says what to do; nothing is changed.
    """
    root = (spool_dir or ctx.obj.spool).absolute()
    findings = examine(root)
    slow = spool_fs.advice(root)
    if slow is not None:  # not unsafe: slow (the exit status stays as the permissions make it)
        findings.append(Finding(NOTE, str(root), slow, spool_fs.ADVICE_SECTION))
    unsafe = sum(1 for f in findings if f.severity == UNSAFE)
    if as_json_:
        emit_json(as_json(root, findings, _shared(root)))
    else:
        for f in findings:
            say(f"{'UNSAFE' if f.severity == UNSAFE else 'note':6}  {f.path}: {f.problem}\n        fix: {f.fix}")
        kind = "shared" if _shared(root) else "single-user"
        say(f"{root} ({kind}): " + (f"{unsafe} unsafe finding(s)" if unsafe else "nothing unsafe found"))
    sys.exit(1 if unsafe else 0)


commands: list[click.Command] = [doctor]
