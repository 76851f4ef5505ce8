"""The `cutor-spool` command line."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from cutor_spool import __version__
from cutor_spool.cli import (
    builds,
    deploy,
    deployments,
    doctor,
    fleet,
    gateway,
    invoke,
    languages,
    ledger,
    manage,
    slurm,
    submissions,
    tail,
    web,
    workers,
)
from cutor_spool.errors import ConfigError, CutorError


class Context:
    def __init__(self, spool: Path, verbose: int) -> None:
        self.spool = spool
        self.verbose = verbose


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger("watchdog").setLevel(logging.CRITICAL)  # its shutdown races are noise
    logging.getLogger("docker").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="cutor-spool")
@click.option(
    "--spool",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("spool"),
    envvar="CUTOR_SPOOL",
    show_default=True,
    help="The spool directory (env CUTOR_SPOOL).",
)
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.pass_context
def cli(ctx: click.Context, spool: Path, verbose: int, quiet: bool) -> None:
    """A filesystem-spool batch runner for untrusted code, with dependencies from Nix.

    \b
    Drop a directory (files plus submission.yaml) into SPOOL/incoming/, or:
      cutor-spool init                      make ./spool
      cutor-spool submit examples/hello-c --wait
      cutor-spool executor --concurrency 2  run submissions (as root; jobs run unprivileged)
    """
    _configure_logging(verbose, quiet)
    ctx.obj = Context(spool.absolute(), verbose)


def _spool_here(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        ctx.ensure_object(Context).spool = value.absolute()


# `cutor-spool executor --spool DIR` as well as `cutor-spool --spool DIR executor`: the one after
# the command wins. Commands that take no spool (schema, validate, systemd) do not get it.
SPOOLLESS = {"schema", "validate", "systemd"}


def _spool_option() -> click.Option:
    return click.Option(
        ["--spool"],
        type=click.Path(file_okay=False, path_type=Path),
        expose_value=False,
        is_eager=True,
        callback=_spool_here,
        help="The spool directory (as the option before the command).",
    )


# Each area keeps its commands in its own module, listed in `commands`; add a module here.
COMMAND_MODULES = (
    submissions,
    manage,
    tail,
    workers,
    web,
    builds,
    deployments,
    deploy,
    invoke,
    ledger,
    gateway,
    doctor,
    languages,
    fleet,
    slurm,
)
for module in COMMAND_MODULES:
    for command in module.commands:
        if command.name not in SPOOLLESS and not isinstance(command, click.Group):
            command.params.append(_spool_option())
        cli.add_command(command)


def main() -> None:
    try:
        cli.main(prog_name="cutor-spool")  # standalone: click handles usage errors and exits
    except ConfigError as exc:
        click.echo(f"configuration error: {exc}", err=True)
        sys.exit(78)
    except CutorError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
