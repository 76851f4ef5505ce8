"""`cutor-spool invoke CID`: drop an invocation of a deployment, and with --wait print its answer.

Exit codes (docs/deployments.md, "Invoke"): 0 the program answered (whatever its HTTP status; with
--wait), 1 it did not end well (a non-zero exit, a limit: its response is a 502 or 504), 2 bad
command line or not a CID, 5 --timeout ran out, 6 unknown deployment CID (checked
before dropping, and again by the executor), 10 the invocation is invalid (the request's or the
deployment's fault: tampered, bad signature, failed build, a seal that does not open, too much
data, ...), 11 the system gave up on it (state error). Without --wait: 0 once it is queued.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, BinaryIO

import click

from cutor_spool.cli.output import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_TIMEOUT, EXIT_USAGE, emit_json, say
from cutor_spool.config import load_config
from cutor_spool.deployments.cid import parse_cid
from cutor_spool.deployments.errors import BadSignature, InvalidCid, KeyFileError
from cutor_spool.deployments.keys import read_signing_key
from cutor_spool.deployments.payers import content_digest, sign_request, signed_path
from cutor_spool.deployments.requests import RequestTooLarge, drop_request
from cutor_spool.deployments.store import Store
from cutor_spool.documents.deployment import InvocationRequest, Response
from cutor_spool.documents.states import State
from cutor_spool.documents.status import StatusDocument
from cutor_spool.layout import SpoolPaths
from cutor_spool.runner.invocations.answer import Ending, body_of, ending, response_json, wait_for
from cutor_spool.runner.invocations.cgi import BadRequest, check_request

EXIT_INVOCATION_INVALID = 10
EXIT_INVOCATION_ERROR = 11


def _header(value: str) -> tuple[str, str]:
    name, colon, rest = value.partition(":")
    if not colon:
        raise click.BadParameter(f"{value!r}: expected NAME:VALUE")
    return name.strip(), rest.strip()


def _paths(ctx: click.Context) -> SpoolPaths:
    paths = SpoolPaths(ctx.find_root().obj.spool)
    if not paths.exists():
        raise click.ClickException(f"{paths.root} is not a spool (run: cutor-spool --spool {paths.root} init)")
    return paths


def _exit_code(status: StatusDocument) -> int:
    return {
        Ending.INVALID: EXIT_INVOCATION_INVALID,
        Ending.ERROR: EXIT_INVOCATION_ERROR,
        Ending.ANSWERED: EXIT_OK,
    }.get(ending(status), EXIT_FAILED)


def _report(status: StatusDocument, response: dict[str, Any] | None, *, as_json: bool) -> None:
    if as_json:
        emit_json({"status": status.dump(), "response": response})
        return
    if status.state in (State.INVALID, State.ERROR):
        why = status.reason or "; ".join(f"{p.where}: {p.message}" for p in status.errors or [])
        say(f"{status.id}: {status.state.value}: {why}", err=True)
        return
    if response is None:
        say(f"{status.id}: no response ({status.outcome})", err=True)
        return
    answer = Response.read(response)
    if answer is None:
        say(f"{status.id}: its response.json is not a response", err=True)
        return
    if answer.status >= 400 and answer.reason:
        say(f"{status.id}: HTTP {answer.status}: {answer.reason}", err=True)
    sys.stdout.buffer.write(body_of(answer))
    sys.stdout.flush()


def _whole(body: bytes | BinaryIO, max_body: int | None) -> bytes:
    """The body in memory, to digest it before it is written (one byte past the maximum at most,
    for drop_request to refuse)."""
    if isinstance(body, bytes):
        return body
    return body.read() if max_body is None else body.read(max_body + 1)


def _signature(
    key_file: Path, cid: str, method: str, path: str, query: str, pairs: list[tuple[str, str]], body: bytes
) -> list[tuple[str, str]]:
    """--payer: the Content-Digest, Signature-Input and Signature fields (docs/payers.md)."""
    try:
        key = read_signing_key(key_file)
        return sign_request(
            key,
            method=method,
            path=signed_path(cid, path),
            query=query,
            headers=pairs,
            body_digest=content_digest(body),
        )
    except (KeyFileError, BadSignature) as exc:
        raise click.BadParameter(str(exc), param_hint="--payer") from None


@click.command()
@click.argument("cid")
@click.option(
    "--data",
    "data",
    type=click.File("rb"),
    default=None,
    help="The request's body (the program's stdin): a file, or - for stdin.",
)
@click.option("--method", "-X", default="POST", show_default=True, help="REQUEST_METHOD.")
@click.option("--path", "path", default="/", show_default=True, help="PATH_INFO (what follows /CID).")
@click.option("--query", default="", help="QUERY_STRING, without '?'.")
@click.option("--header", "-H", "headers", multiple=True, help="A request header NAME:VALUE (repeatable).")
@click.option(
    "--payer",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Sign the request with this signing key (of `keys new`): its owner pays, not the deployment's.",
)
@click.option("--wait", is_flag=True, help="Follow it to its end and print the response body.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after this many seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: the id, or with --wait the status and response.")
@click.pass_context
def invoke(
    ctx: click.Context,
    cid: str,
    data: BinaryIO | None,
    method: str,
    path: str,
    query: str,
    headers: tuple[str, ...],
    payer: Path | None,
    wait: bool,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Invoke the deployment CID with some data: it runs on an executor as a CGI program.

    \b
      cutor-spool invoke bafybei… --data input.json --wait
      echo hi | cutor-spool invoke bafybei… --data - -H 'Content-Type: text/plain' --wait --json
      cutor-spool invoke bafybei… --data input.json --payer payer.key   # payer.key's owner pays
    """
    paths = _paths(ctx)
    try:
        parse_cid(cid)
    except InvalidCid as exc:
        say(str(exc), err=True)
        sys.exit(EXIT_USAGE)
    if not Store(paths.root).has(cid):
        say(f"unknown CID {cid}: no such deployment in this spool", err=True)
        sys.exit(EXIT_NOT_FOUND)
    pairs = [_header(h) for h in headers]
    max_body = load_config(paths.root).deployments.max_body
    body: bytes | BinaryIO = data if data is not None else b""
    try:
        check_request(method, path, query, pairs)
        if payer is not None:
            body = _whole(body, max_body)
            pairs += _signature(payer, cid, method, path, query, pairs, body)
            check_request(method, path, query, pairs)
    except BadRequest as exc:
        raise click.BadParameter(str(exc)) from None
    request = InvocationRequest(deployment=cid, method=method, path=path, query=query, headers=pairs)
    try:
        entry_id = drop_request(paths, request, body, max_body=max_body)
    except RequestTooLarge as exc:
        say(str(exc), err=True)
        sys.exit(EXIT_INVOCATION_INVALID)
    if not wait:
        if as_json:
            emit_json({"id": entry_id})
        else:
            say(entry_id)
        return
    status = wait_for(paths, entry_id, timeout)
    if status is None:
        say(f"{entry_id}: still not finished after {timeout}s", err=True)
        sys.exit(EXIT_TIMEOUT)
    _report(status, response_json(paths, entry_id), as_json=as_json)
    sys.exit(_exit_code(status))


commands: list[click.Command] = [invoke]
