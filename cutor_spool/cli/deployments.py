"""Content store and key commands: `cas put/get/ls/export` and `keys new/show/server`.

Exit codes beyond output.py's, for every command of deployments (`exits` below): an unknown CID
exits with EXIT_NOT_FOUND (6), a stored blob whose bytes no longer match its CID with EXIT_MISMATCH
(7), a text that is not a CID with click's usage code (2), terms not accepted with EXIT_TERMS (8),
a bad signature or a blob that is not a valid spec with EXIT_BAD_SPEC (9), an invalid
deployment.yaml or bundle with EXIT_INVALID (3, as `submit`'s invalid submission); any other error
(a key file, a missing server key) with 1.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click

from cutor_spool.cli.output import EXIT_INVALID, EXIT_NOT_FOUND, EXIT_USAGE, emit_json, say
from cutor_spool.deployments import car, keys
from cutor_spool.deployments.errors import (
    BadManifest,
    BadSignature,
    BadSpec,
    BlobMismatch,
    BundleError,
    DeploymentError,
    InvalidCid,
    TermsNotAccepted,
    UnknownCid,
)
from cutor_spool.deployments.store import Store
from cutor_spool.layout import SpoolPaths

EXIT_MISMATCH = 7  # a stored blob's bytes do not match its CID: it was not served
EXIT_TERMS = 8  # the owner did not accept the spool's terms (or its acceptance does not verify)
EXIT_BAD_SPEC = 9  # a signature does not verify, or a blob named as a deployment is not a spec
# Most specific first: the first class an error is an instance of gives its code.
EXIT_CODES: tuple[tuple[type[DeploymentError], int], ...] = (
    (UnknownCid, EXIT_NOT_FOUND),
    (BlobMismatch, EXIT_MISMATCH),
    (InvalidCid, EXIT_USAGE),
    (TermsNotAccepted, EXIT_TERMS),
    (BadSignature, EXIT_BAD_SPEC),
    (BadSpec, EXIT_BAD_SPEC),
    (BadManifest, EXIT_INVALID),
    (BundleError, EXIT_INVALID),
)

P = ParamSpec("P")
R = TypeVar("R")


def exit_code_of(exc: DeploymentError) -> int:
    return next((code for kind, code in EXIT_CODES if isinstance(exc, kind)), 1)


def exits(command: Callable[P, R]) -> Callable[P, R]:
    """Ends a command that raised one of deployments' errors with its message and exit code."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except DeploymentError as exc:
            say(f"error: {exc}", err=True)
            sys.exit(exit_code_of(exc))

    return wrapper


def _set_spool(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        ctx.find_root().obj.spool = value.absolute()


# The CLI gives `--spool` after the command only to plain commands; these live in groups.
spool_option = click.option(
    "--spool",
    type=click.Path(file_okay=False, path_type=Path),
    expose_value=False,
    is_eager=True,
    callback=_set_spool,
    help="The spool directory (as the option before the command).",
)


def _store(ctx: click.Context) -> Store:
    paths = SpoolPaths(ctx.find_root().obj.spool)
    if not paths.exists():
        raise click.ClickException(f"{paths.root} is not a spool (run: cutor-spool --spool {paths.root} init)")
    return Store(paths.root)


@click.group()
def cas() -> None:
    """The spool's content-addressed store: blobs named by their IPFS CID (CIDv1, as `ipfs_cid` computes).

    \b
    Example:
      cid=$(cutor-spool cas put bundle.zip)
      cutor-spool cas get "$cid" -o copy.zip
      cutor-spool cas export "$cid" -o bundle.car   # then: ipfs dag import bundle.car
    """


@cas.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path))
@spool_option
@click.pass_context
@exits
def put(ctx: click.Context, file: Path) -> None:
    """Store FILE (- for stdin) and print its CID."""
    store = _store(ctx)
    cid = store.put(sys.stdin.buffer) if str(file) == "-" else store.put(file)
    say(cid)


@cas.command()
@click.argument("cid")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here, not to stdout.")
@spool_option
@click.pass_context
@exits
def get(ctx: click.Context, cid: str, output: Path | None) -> None:
    """Write blob CID, after checking its bytes against the CID (a mismatch exits 7, unknown 6)."""
    store = _store(ctx)
    if output is not None:
        store.copy_to(cid, output)
        return
    data = store.get(cid)
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


@cas.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON (CID and size).")
@spool_option
@click.pass_context
def ls_(ctx: click.Context, as_json: bool) -> None:
    """List the stored CIDs (not checked: `cas get` checks)."""
    store = _store(ctx)
    cids = store.ls()
    if as_json:
        emit_json([{"cid": cid, "size": store.path(cid).stat().st_size} for cid in cids])
        return
    for cid in cids:
        say(cid)


@cas.command()
@click.argument("cid")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The .car file.")
@spool_option
@click.pass_context
@exits
def export(ctx: click.Context, cid: str, output: Path) -> None:
    """Write blob CID's blocks as a CARv1 file that `ipfs dag import` reads."""
    car.export_file(_store(ctx), cid, output)


@click.group(name="keys")
def keys_() -> None:
    """Owners' and payers' signing keys, and the spool's server key.

    \b
    Example:
      cutor-spool keys new --out owner.key      # prints the public key: ed25519:…
      cutor-spool keys show owner.key
      cutor-spool keys server --private-out /etc/cutor-spool/server.key
    """


@keys_.command()
@click.option(
    "--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The key file (0600)."
)
@exits
def new(out: Path) -> None:
    """Make an Ed25519 signing key (an owner's or a payer's) and print its public key."""
    key = keys.SigningKey.generate()
    keys.write_signing_key(key, out)
    say(key.public)


@keys_.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@exits
def show(file: Path) -> None:
    """Print the public key of a key file (a signing key or the server's)."""
    say(keys.public_of_file(file))


@keys_.command()
@click.option(
    "--private-out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where the private key goes (0600; outside the spool; executors are given this path).",
)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@spool_option
@click.pass_context
@exits
def server(ctx: click.Context, private_out: Path, as_json: bool) -> None:
    """Make the spool's X25519 key pair: the public key into SPOOL/keys/server.pub, the private key
    into --private-out, which must be outside the spool. Refuses to replace an existing pair."""
    spool = _store(ctx).root.parent
    public = keys.make_server_key(spool, private_out)
    info: dict[str, Any] = {
        "public": public,
        "public_file": str(keys.server_public_path(spool)),
        "private_file": str(private_out.absolute()),
    }
    if as_json:
        emit_json(info)
    else:
        say(public)
        say(f"public key in {info['public_file']}; private key in {info['private_file']} (keep it there)", err=True)


commands: list[click.Command] = [cas, keys_]
