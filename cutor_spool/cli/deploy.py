"""`cutor-spool deploy DIR --key OWNER_KEY`: a directory with a deployment.yaml becomes a deployment.

Everything that can be refused is checked before anything is stored or shown for approval: the
owner's key, deployment.yaml (every problem listed), the spool's limits and network policy, the
files (packed into the deterministic zip in memory), the server key when there are env vars. Then
the terms are shown and must be accepted (on a terminal, or with --accept-terms); only then are the
terms, the bundle and the spec stored, the pending build record written and the build dropped.
A refusal at any step stores nothing.

Exit codes (docs/deployments.md): 0 deployed (with --wait: built), 1 another error or (--wait) the
build failed, 3 the directory is not a valid deployment, 5 --wait ran out, 8 the terms were not
accepted.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click

from cutor_spool.cli.deployments import EXIT_TERMS, exits
from cutor_spool.cli.output import EXIT_FAILED, EXIT_INVALID, EXIT_TIMEOUT, emit_json, say
from cutor_spool.config import load_config
from cutor_spool.deployments import bundle, keys
from cutor_spool.deployments.errors import BadManifest, BundleError, KeyFileError
from cutor_spool.deployments.manifest import MANIFEST_NAME, DeploymentManifest, inline_files, read_manifest
from cutor_spool.deployments.requests import drop_request, new_request_id, read_build_record, write_build_record
from cutor_spool.deployments.spec import accept_terms, make_spec, utc_now
from cutor_spool.deployments.store import Store
from cutor_spool.deployments.terms import read_terms, store_terms
from cutor_spool.documents.deployment import DeploymentBuild, DeploymentState, InvocationRequest, RequestKind
from cutor_spool.errors import SpoolIOError
from cutor_spool.layout import SpoolPaths
from cutor_spool.watcher.notify import Waiter, needs_polling


def _paths(ctx: click.Context) -> SpoolPaths:
    paths = SpoolPaths(ctx.obj.spool)
    if not paths.exists():
        raise click.ClickException(f"{paths.root} is not a spool (run: cutor-spool --spool {paths.root} init)")
    return paths


def _invalid(lines: list[str]) -> NoReturn:
    for line in lines:
        say(f"invalid: {line}", err=True)
    sys.exit(EXIT_INVALID)


def _prepare(paths: SpoolPaths, directory: Path) -> tuple[DeploymentManifest, bytes]:
    """The manifest and the bundle's bytes, or exit 3 with every problem."""
    config = load_config(paths.root)
    try:
        manifest = read_manifest(directory, maximum=config.limits.resolved_maximum())
    except BadManifest as exc:
        _invalid([f"{where}: {message}" for where, message in exc.problems])
    if manifest.network and not config.allow_network:
        _invalid(["network: this spool does not allow network access"])
    try:
        data = bundle.pack(
            directory,
            skip={MANIFEST_NAME},  # its env holds secrets; the spec carries the rest of it
            extra=inline_files(manifest),
            max_files=config.max_files,
            max_bytes=config.max_submission_size,
            max_file_size=config.max_submission_size,
        )
    except BundleError as exc:
        _invalid([f"file {problem}" for problem in exc.problems])
    return manifest, data


def _server_key(paths: SpoolPaths) -> str:
    try:
        return keys.read_server_public(paths.root)
    except KeyFileError as exc:
        raise KeyFileError(f"the deployment's env vars are sealed to the spool's server key, and {exc}") from None


def _approve(paths: SpoolPaths, terms: bytes, accepted: bool, as_json: bool) -> None:
    """Shows the terms and asks; exits 8 unless they are accepted."""
    if accepted:
        say(f"accepting the terms of {paths.terms} (--accept-terms)", err=True)
        return
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        say(
            f"error: the spool's terms ({paths.terms}) must be accepted: run `deploy` on a terminal to read"
            " and accept them, or pass --accept-terms once you have read them. Nothing was stored.",
            err=True,
        )
        sys.exit(EXIT_TERMS)
    # With --json, stdout is for the JSON: the terms go to the terminal through stderr.
    say(f"--- the terms of this spool ({paths.terms}) ---", err=as_json)
    say(terms.decode("utf-8", "replace").rstrip("\n"), err=as_json)
    say("--- end of the terms ---", err=as_json)
    if not click.confirm("Do you accept these terms?", default=False, err=True):
        say("error: the terms were not accepted. Nothing was stored.", err=True)
        sys.exit(EXIT_TERMS)


def _wait(paths: SpoolPaths, cid: str, timeout: float | None, interval: float) -> DeploymentBuild | None:
    """The build record once it is no longer pending, or None when `timeout` ran out first; woken
    by inotify when the executor renames the record into place (polling on NFS)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with Waiter([paths.deployments / cid], poll=needs_polling(paths.root)) as waiter:
        while True:
            record = read_build_record(paths, cid)
            if record is not None and record.state != DeploymentState.PENDING:
                return record
            left = interval if deadline is None else min(interval, deadline - time.monotonic())
            if left <= 0:
                return None
            waiter.wait(left)


def _drop_build(paths: SpoolPaths, cid: str, entry: str) -> None:
    """The pending record first (an executor may finish the build before `deploy` returns), then the
    build's entry; a build that cannot be queued is recorded `failed`, with the reason."""
    created = utc_now()
    write_build_record(
        paths, DeploymentBuild(deployment=cid, state=DeploymentState.PENDING, build_entry=entry, created=created)
    )
    try:
        drop_request(paths, InvocationRequest(kind=RequestKind.BUILD, deployment=cid), entry_id=entry)
    except OSError as exc:
        reason = f"the build could not be queued: {exc.strerror or exc}"
        failed = DeploymentBuild(
            deployment=cid, state=DeploymentState.FAILED, build_entry=entry, reason=reason, created=created
        )
        write_build_record(paths, failed)
        raise SpoolIOError(f"{cid}: {reason} (deploy again)") from exc


@click.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--key", "key_file", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The owner's key file."
)
@click.option(
    "--accept-terms", "accept_terms_", is_flag=True, help="Accept the spool's terms without being asked (scripts, CI)."
)
@click.option("--wait", "wait_", is_flag=True, help="Follow the deployment's build to its end.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after this many seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_context
@exits
def deploy(
    ctx: click.Context,
    directory: Path,
    key_file: Path,
    accept_terms_: bool,
    wait_: bool,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Deploy DIRECTORY (files plus deployment.yaml) and print its id, the CID of its spec.

    \b
    Shows the spool's terms and asks to accept them; packs the directory into a deterministic zip,
    seals the env vars to the spool's server key, signs the spec with --key, stores them and drops
    the deployment's one build (its compile runs once, on an executor).
    \b
    Exit codes: 0 deployed (with --wait: built), 1 error or (--wait) build failed, 3 invalid
    deployment, 5 --wait timed out, 8 terms not accepted.
    \b
    Example:
      cutor-spool keys new --out owner.key
      cid=$(cutor-spool deploy examples/deploy-echo --key owner.key --accept-terms --wait)
      cutor-spool invoke "$cid" --data request.txt --wait --json
    """
    paths = _paths(ctx)
    owner = keys.read_signing_key(key_file)
    manifest, zipped = _prepare(paths, directory)
    server_key = _server_key(paths) if manifest.env else None
    terms = read_terms(paths)
    _approve(paths, terms, accept_terms_, as_json)

    store = Store(paths.root)
    terms_cid = store_terms(paths, store, terms)
    bundle_cid = store.put(zipped)
    _spec, spec_data = make_spec(
        owner, bundle=bundle_cid, manifest=manifest, terms=accept_terms(owner, terms_cid), server_key=server_key
    )
    cid = store.put(spec_data)
    entry = new_request_id()
    _drop_build(paths, cid, entry)
    info: dict[str, Any] = {
        "deployment": cid,
        "owner": owner.public,
        "bundle": bundle_cid,
        "terms": terms_cid,
        "build": entry,
        "state": DeploymentState.PENDING.value,
    }
    if not wait_:
        emit_json(info) if as_json else say(cid)
        return
    if not as_json:
        say(f"{cid}: deployed; building ({entry})", err=True)
    record = _wait(paths, cid, timeout, load_config(paths.root).poll_interval)
    if record is None:
        say(f"{cid}: the build is still pending after {timeout}s", err=True)
        emit_json(info) if as_json else say(cid)
        sys.exit(EXIT_TIMEOUT)
    info.update(state=record.state.value, work=record.work, reason=record.reason)
    if as_json:
        emit_json({k: v for k, v in info.items() if v is not None})
    else:
        say(cid)
        if record.state != DeploymentState.READY:
            say(f"{cid}: the build failed: {record.reason or 'no reason given'}", err=True)
    if record.state != DeploymentState.READY:
        sys.exit(EXIT_FAILED)


commands: list[click.Command] = [deploy]
