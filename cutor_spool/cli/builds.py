"""Nix commands: builder, packages, gc."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import click

from cutor_spool.builder.cache import DEFAULT_SIGNING_KEY
from cutor_spool.cli.output import emit_json, human_size, say
from cutor_spool.cli.workers import as_pilot, pilot_options
from cutor_spool.config import load_config
from cutor_spool.layout import SpoolPaths
from cutor_spool.runner.slots import DEFAULT_STATE_DIR
from cutor_spool.units import parse_duration, parse_size

STORE_HELP = "Use a separate Nix store rooted at this directory (ROOT/nix/store), as another host would have."


def _paths(ctx: click.Context) -> SpoolPaths:
    paths = SpoolPaths(ctx.obj.spool)
    if not paths.exists():
        raise click.ClickException(f"{paths.root} is not a spool (run: cutor-spool --spool {paths.root} init)")
    return paths


def _duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    try:
        return None if value is None else parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def _size(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    try:
        return None if value is None else parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.command()
@click.option("--concurrency", "-c", type=click.IntRange(1, 64), default=1, show_default=True, help="Builds at once.")
@click.option("--poll/--inotify", default=None, help="Find work by polling alone (default: automatic, on NFS).")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_STATE_DIR,
    show_default=True,
    help="Per-host scratch space for builds (local disk, not the spool).",
)
@click.option("--nix-store", "store_root", type=click.Path(file_okay=False, path_type=Path), help=STORE_HELP)
@click.option(
    "--signing-key",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_SIGNING_KEY,
    show_default=True,
    help="Secret key that signs the spool's binary cache (made on first start if missing).",
)
@click.option("--host", default=None, help="Host name recorded in leases (default: this host's).")
@click.option("--grace", type=float, default=30.0, show_default=True, help="On SIGTERM, seconds to finish a build.")
@pilot_options
@click.pass_context
def builder(
    ctx: click.Context,
    concurrency: int,
    poll: bool | None,
    state_dir: Path,
    store_root: Path | None,
    signing_key: Path,
    host: str | None,
    grace: float,
    exit_when_idle: float | None,
    max_jobs: int | None,
) -> None:
    """Build dependency environments requested in SPOOL/builds/, until SIGTERM (run as root).

    \b
    Each request is built once with Nix (restricted evaluation, Nix's sandbox and build users,
    with spool.yaml's nix.build_timeout, build_memory and build_log), rooted against garbage
    collection, exported to the spool's signed binary cache, and published in builds/done/<key>
    with its env script. SIGKILL loses nothing: the lease expires and another builder takes over.
    \b
    Example:
      cutor-spool --spool /srv/spool builder --concurrency 2
    """
    from cutor_spool.builder.worker import Builder
    from cutor_spool.cli.workers import with_status_page

    builder = Builder(
        ctx.obj.spool,
        concurrency=concurrency,
        poll=poll,
        state_dir=state_dir,
        store_root=store_root,
        signing_key=signing_key,
        host=host or socket.gethostname(),
        grace=grace,
    )
    with_status_page(as_pilot(builder, exit_when_idle, max_jobs)).run()


def _age(value: str | None) -> str:
    return value[:19].replace("T", " ") if value else "never"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option("--all", "show_all", is_flag=True, help="List failed builds too.")
@click.pass_context
def packages(ctx: click.Context, as_json: bool, show_all: bool) -> None:
    """List the cached environments and their packages: name, version, store path, size, last
    use and how many submissions used them."""
    from cutor_spool.builder.inventory import environments
    from cutor_spool.builder.inventory import packages as package_list

    envs = environments(_paths(ctx))
    shown = [e for e in envs if show_all or e.status == "ok"]
    data: dict[str, Any] = {"environments": [e.to_json() for e in shown], "packages": package_list(envs)}
    if as_json:
        emit_json(data)
        return
    say(f"environments: {len(shown)}")
    for env in data["environments"]:
        request = env["request"] or {}
        what = f"nix file {request.get('nix')}" if request.get("nix") else " ".join(request.get("attrs") or [])
        say(
            f"  {env['key'][:12]}  {env['status']:<6} {human_size(env['closure_size']):>9}  "
            f"{env['uses']:>5} use(s)  last {_age(env['last_used'])}  {what}"
        )
    say(f"packages: {len(data['packages'])}")
    for pkg in data["packages"]:
        say(
            f"  {pkg['name'] or '?'} {pkg['version'] or ''}  {human_size(pkg['size']):>9}  "
            f"{pkg['uses']:>5} use(s)  last {_age(pkg['last_used'])}  {pkg['path']}"
        )


@click.command()
@click.option(
    "--unused-for", callback=_duration, default=None, help="Evict environments not used for this long (7d, 12h)."
)
@click.option(
    "--max-size", callback=_size, default=None, help="Then evict the least recently used until this fits (20GiB)."
)
@click.option("--dry-run", is_flag=True, help="Only say what would be evicted.")
@click.option("--no-collect", is_flag=True, help="Evict from the spool, but do not run the store's garbage collector.")
@click.option("--nix-store", "store_root", type=click.Path(file_okay=False, path_type=Path), help=STORE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print what was (or would be) evicted as JSON.")
@click.pass_context
def gc(
    ctx: click.Context,
    unused_for: float | None,
    max_size: int | None,
    dry_run: bool,
    no_collect: bool,
    store_root: Path | None,
    as_json: bool,
) -> None:
    """Evict cached environments and collect the Nix store (never one an active submission uses).

    \b
    With neither --unused-for nor --max-size, nothing is evicted: only GC roots of environments
    gone from the spool are dropped and the store is collected. Run it on every host with a
    Nix store of its own.
    \b
    Example (cron, on the builder host):
      cutor-spool --spool /srv/spool gc --unused-for 7d --max-size 20GiB
    """
    from cutor_spool.builder.gc import run_gc
    from cutor_spool.builder.nixcmd import NixSettings

    paths = _paths(ctx)
    config = load_config(paths.root)
    settings = NixSettings.from_config(config.nix, paths.root, store_root=store_root)
    report = run_gc(
        paths, config, settings, unused_for=unused_for, max_size=max_size, dry_run=dry_run, collect=not no_collect
    )
    if as_json:
        emit_json(report.to_json())
        return
    verb = "would evict" if dry_run else "evicted"
    say(f"{verb} {len(report.evicted)} environment(s); {report.kept} kept, {len(report.in_use)} in use")
    for item in report.evicted:
        say(f"  {item['key'][:12]}  {human_size(item['closure_size'])}  {item['reason']}")
    for item in report.skipped:
        say(f"  {item['key'][:12]}  kept: {item['reason']}")
    if not dry_run:
        say(
            f"cached closures {human_size(report.size_before)} -> {human_size(report.size_after)}; "
            f"{report.roots_removed} GC root(s) dropped; store: {report.store_paths_deleted} path(s), "
            f"{human_size(report.store_bytes_freed)} freed; binary cache: {report.cache_files_removed} file(s), "
            f"{human_size(report.cache_bytes_freed)} freed"
        )


commands: list[click.Command] = [builder, packages, gc]
