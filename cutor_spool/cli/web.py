"""Commands for running the spool as a service: status-page, systemd."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import click

from cutor_spool.cli.output import emit_json, say
from cutor_spool.config import load_config
from cutor_spool.layout import SpoolPaths


@click.command("status-page")
@click.option("--full", is_flag=True, help="Re-read and re-render every submission, ignoring the index.")
@click.option(
    "--watch", is_flag=True, help="Keep regenerating every status_page.interval (for a host that runs no worker)."
)
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@click.pass_context
def status_page(ctx: click.Context, full: bool, watch: bool, as_json: bool) -> None:
    """Regenerate SPOOL/status/: index.html, a page per submission, status.json and metrics.prom.

    Workers regenerate it by themselves (spool.yaml `status_page`); this does it now. Only new and
    changed submissions are read; --full rebuilds everything (after editing done/ by hand, say).
    Serve SPOOL/status/ with any static web server, or open index.html in a browser.

    \b
    Examples:
      cutor-spool status-page
      cutor-spool status-page --watch &     # a page for a spool whose workers have it disabled
    """
    from cutor_spool.watcher.clock import FsClock
    from cutor_spool.web_status import regenerate

    paths = SpoolPaths(ctx.obj.spool)
    if not paths.exists():
        raise click.ClickException(f"{paths.root} is not a spool (run: cutor-spool --spool {paths.root} init)")
    config = load_config(paths.root).status_page
    clock = FsClock(paths.tmp, f"status-page-{os.getpid()}")
    stop = threading.Event()
    if watch:  # systemd stops it with SIGTERM: finish the page being written, remove the clock
        signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    try:
        while True:
            report = regenerate(paths, config, now=clock.now, full=full)
            if as_json:
                emit_json({**report.__dict__, "index": str(paths.status / "index.html")})
            elif not watch or report.rendered or report.removed:
                say(
                    f"{paths.status / 'index.html'}: {report.done} result(s), {report.rendered} page(s) rendered, "
                    f"{report.removed} removed, {report.live} running, in {report.seconds:.3f}s"
                )
            if not watch:
                return
            full = False
            if stop.wait(config.interval):
                return
    except KeyboardInterrupt:
        pass
    finally:
        clock.remove()


@click.command("systemd")
@click.argument("name", required=False)
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the units into this directory (e.g. /etc/systemd/system) instead of printing them.",
)
@click.option("--bin", "executable", help="The cutor-spool executable the units run (default: this one).")
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The environment file the units read (default /etc/cutor-spool/cutor-spool.env); "
    "with --output it is created if missing, never overwritten.",
)
def systemd(name: str | None, output: Path | None, executable: str | None, env_file: Path | None) -> None:
    """Print the systemd units for executors, builders and the gateway (or write them with --output).

    Each instance of a template is one worker; scale by starting more instances. NAME prints one
    file only (cutor-spool-executor@.service, cutor-spool-builder@.service,
    cutor-spool-gateway.service, cutor-spool.target, cutor-spool.env).

    \b
    Examples:
      cutor-spool systemd --output /etc/systemd/system
      systemctl daemon-reload
      systemctl enable --now cutor-spool.target cutor-spool-executor@{1..4} cutor-spool-builder@1
    """
    from cutor_spool import systemd as units_module

    env_path = env_file or units_module.DEFAULT_ENV_FILE
    try:
        rendered = units_module.units(
            os.path.abspath(executable) if executable else units_module.default_executable(), env_path.absolute()
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    files = {**rendered, units_module.ENV_NAME: units_module.environment_file()}
    if name is not None:
        if name not in files:
            raise click.BadParameter(f"{name!r} is not one of: {', '.join(files)}", param_hint="NAME")
        files = {name: files[name]}
    if output is None:
        for index, (file_name, text) in enumerate(files.items()):
            if len(files) > 1:
                say(("\n" if index else "") + f"### {file_name}")
            click.echo(text, nl=False)
        return
    output.mkdir(parents=True, exist_ok=True)
    for file_name, text in files.items():
        if file_name == units_module.ENV_NAME:
            continue
        (output / file_name).write_text(text, encoding="utf-8")
        say(f"wrote {output / file_name}")
    if units_module.ENV_NAME in files:
        target = env_path.absolute()
        if target.exists():
            say(f"kept {target} (exists)")
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(files[units_module.ENV_NAME], encoding="utf-8")
            say(f"wrote {target}: set CUTOR_SPOOL there")


commands: list[click.Command] = [status_page, systemd]
