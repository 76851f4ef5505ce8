"""One HTTP request through the spool: checks, the body streamed into a staged entry, the drop (or,
for a known Idempotency-Key, the entry it names), the wait, and the HTTP answer.

Every check that can refuse a request comes before anything is written: the CID (400, 404), the
method, path, query and headers as CGI takes them (400), the payments seam (401, 402), the
Content-Length (413). The body is streamed chunk by chunk into `tmp/`, 413 as soon as it crosses
`deployments.max_body` (the staged entry removed). The HTTP statuses of the endings are in `answers.py`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from anyio import to_thread
from starlette.requests import Request

from cutor_spool.deployments import idempotency
from cutor_spool.deployments.cid import parse_cid
from cutor_spool.deployments.errors import InvalidCid
from cutor_spool.deployments.requests import (
    BODY,
    commit_staging,
    finish_staging,
    new_request_id,
    new_staging,
)
from cutor_spool.deployments.store import Store
from cutor_spool.documents.deployment import InvocationRequest
from cutor_spool.gateway.admission import Admission
from cutor_spool.gateway.answers import Answer, Refusal, answer_of, withdrawn
from cutor_spool.gateway.direct import DIRECT_MAX_BODY, DirectDoors
from cutor_spool.gateway.waiting import SharedWaiter
from cutor_spool.layout import SpoolPaths
from cutor_spool.runner.invocations.answer import final_status
from cutor_spool.runner.invocations.cgi import BadRequest, check_request

log = logging.getLogger(__name__)

# Hop-by-hop fields (RFC 9110 7.6.1) are the connection's, not the program's, either way.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
)
IDEMPOTENCY_HEADER = "idempotency-key"
KNOWN_FOR = 5.0  # seconds a CID found in the store is believed to be there
_KNOWN_MAX = 4096


@dataclass(frozen=True)
class Call:
    """What the payments seam sees of a request before anything is written."""

    http: Request
    invocation: InvocationRequest


class Payments(Protocol):
    """The seam for the escrow (filled in after the ledger and payers' signatures are merged):
    `check` raises Refusal (401 a bad signature, 402 insufficient funds) or returns the verified
    payer (None: the deployment's owner pays), which scopes the Idempotency-Key and goes into
    the request as `payer`."""

    def check(self, call: Call) -> str | None: ...


class NoPayments:
    """No checks: every invocation is the owner's (the default until the escrow is wired in)."""

    def check(self, call: Call) -> str | None:
        return None


@dataclass
class Gateway:
    paths: SpoolPaths
    max_body: int
    waiter: SharedWaiter
    claim_timeout: float
    timeout: float
    payments: Payments = field(default_factory=NoPayments)
    direct: DirectDoors | None = None  # the direct path to the warm pools of this host's executors
    queue_timeout: float = 300.0  # the most an invocation waits in the queue while it moves (admission.py)
    max_queue: int = 0  # new invocations refused (503) while this many wait unclaimed; 0: no limit

    def __post_init__(self) -> None:
        self.store = Store(self.paths.root)
        self.admission = Admission(self.paths, self.max_queue)
        self._cids: dict[str, float] = {}  # CIDs the store has, until when we believe it

    async def handle(self, http: Request, cid: str, path: str) -> Answer:
        invocation = await self._checked(http, cid, path)
        key = _idempotency_key(http)
        if key is None and self.direct is not None and _small(http):
            # The direct path (direct.py): the door checks the payer and charges, in blocks.
            entry_id = new_request_id()
            body = await self._body(http)
            answer = await self.direct.send(entry_id, invocation, body)
            if answer is not None:
                return answer
            return await self._spooled(http, invocation, None, (entry_id, body))
        return await self._spooled(http, invocation, key, None)

    async def _spooled(
        self, http: Request, invocation: InvocationRequest, key: str | None, read: tuple[str, bytes] | None
    ) -> Answer:
        """The spool path: `read` is the id and body of a request the direct path gave back."""
        cid = invocation.deployment
        if key is not None:
            invocation = invocation.model_copy(update={"idempotency_key": key})
        payer = await to_thread.run_sync(self.payments.check, Call(http, invocation))
        if payer is not None:
            invocation = invocation.model_copy(update={"payer": payer})
        key_file = None if key is None else idempotency.key_path(self.paths, cid, key, payer)
        if key_file is not None:
            first = await to_thread.run_sync(idempotency.record, key_file)
            if first is not None:
                digest = _Fingerprint(invocation)
                await self._read_body(http, None, digest)
                return await self.follow(_same(first, digest.hexdigest()), key_file)
        full = await self.admission.refusal()
        if full is not None:
            return full
        entry_id = await self._drop(http, invocation, key_file, read)
        return await self.follow(entry_id, key_file)

    async def _known(self, cid: str) -> bool:
        """Whether the store has the CID: a look in a worker thread (the store may be on NFS), the
        answer kept for KNOWN_FOR seconds when it is yes (a thread hop per request cost the
        direct path a fifth of its gateway's time; a deployment removed is a 404 that much later)."""
        now = time.monotonic()
        if self._cids.get(cid, 0.0) > now:
            return True
        if not await to_thread.run_sync(self.store.has, cid):
            return False
        if len(self._cids) >= _KNOWN_MAX:
            self._cids.clear()
        self._cids[cid] = now + KNOWN_FOR
        return True

    async def _body(self, http: Request) -> bytes:
        return b"".join([chunk async for chunk in self._chunks(http)])

    async def _chunks(self, http: Request) -> AsyncIterator[bytes]:
        """The body's chunks as they come, counted (`bytes_in`), 413 once above the maximum."""
        size = 0
        async for chunk in http.stream():
            size += len(chunk)
            http.state.bytes_in = size
            if size > self.max_body:
                raise self._too_large()
            yield chunk

    def _too_large(self) -> Refusal:
        return Refusal(413, f"the request's body is above the spool's maximum of {self.max_body} bytes")

    async def _checked(self, http: Request, cid: str, path: str) -> InvocationRequest:
        if self._cids.get(cid, 0.0) <= time.monotonic():  # else parsed and found a moment ago
            try:
                parse_cid(cid)
            except InvalidCid as exc:
                raise Refusal(400, str(exc)) from None
        if not await self._known(cid):
            raise Refusal(404, f"unknown CID {cid}: no such deployment in this spool")
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in http.headers.raw
            if name.decode("latin-1").lower() not in HOP_BY_HOP
        ]
        query = http.scope.get("query_string", b"").decode("latin-1")
        try:
            check_request(http.method, path, query, headers)
        except BadRequest as exc:
            raise Refusal(400, str(exc)) from None
        length = http.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise self._too_large()
        return InvocationRequest(deployment=cid, method=http.method, path=path, query=query, headers=headers)

    async def _drop(
        self, http: Request, invocation: InvocationRequest, key_file: Path | None, read: tuple[str, bytes] | None
    ) -> str:
        entry_id = new_request_id() if read is None else read[0]
        staging = await to_thread.run_sync(new_staging, self.paths, entry_id)
        keyed = False
        try:
            digest = _Fingerprint(invocation)
            if read is None:
                await self._read_body(http, staging / BODY, digest)
            else:
                await to_thread.run_sync(_write_body, staging / BODY, read[1])
            await to_thread.run_sync(finish_staging, staging, invocation)
            if key_file is not None:
                first = await to_thread.run_sync(idempotency.remember, key_file, entry_id, digest.hexdigest())
                if first is not None:  # another request with the key won the race: answer from its entry
                    await to_thread.run_sync(shutil.rmtree, staging, True)
                    return _same(first, digest.hexdigest())
                keyed = True
            await to_thread.run_sync(commit_staging, self.paths, staging, entry_id)
        except BaseException:
            await to_thread.run_sync(shutil.rmtree, staging, True)
            if keyed and key_file is not None:
                await to_thread.run_sync(idempotency.release, key_file, entry_id)
            raise
        return entry_id

    async def _read_body(self, http: Request, target: Path | None, digest: _Fingerprint) -> None:
        """Streams the body into `target` (None: only hashes it), 413 once above the maximum."""
        stream = None if target is None else await to_thread.run_sync(_open_body, target)
        try:
            async for chunk in self._chunks(http):
                digest.body.update(chunk)
                if chunk and stream is not None:
                    await to_thread.run_sync(stream.write, chunk)
            if stream is not None:
                await to_thread.run_sync(_sync_close, stream)
        finally:
            if stream is not None:
                stream.close()

    async def follow(self, entry_id: str, key_file: Path | None) -> Answer:
        """Waits for the entry's end and answers it; 503 when no executor claimed it while the
        queue did not move for the claim timeout, or within the queue timeout (the entry
        withdrawn, so it never runs unanswered: admission.py), 504 when our own timeout ran out
        after the claim."""
        started = time.monotonic()
        bound = started + max(self.queue_timeout, self.claim_timeout)
        deadline: float | None = None
        with self.waiter.watching(entry_id) as event:
            while True:
                where = await to_thread.run_sync(_whereabouts, self.paths, entry_id)
                if where == "done":
                    status = await to_thread.run_sync(final_status, self.paths, entry_id)
                    if status is not None:
                        return await to_thread.run_sync(answer_of, self.paths, status, key_file)
                elif where == "active" and deadline is None:
                    deadline = time.monotonic() + self.timeout
                claim_deadline = bound
                if deadline is None:
                    moved = await self.waiter.progress.moved_at()
                    claim_deadline = min(max(started, moved) + self.claim_timeout, bound)
                now = time.monotonic()
                if deadline is None and now > claim_deadline:
                    if where == "incoming" and not await to_thread.run_sync(_withdraw, self.paths, entry_id):
                        continue  # claimed just now
                    if key_file is not None:
                        await to_thread.run_sync(idempotency.release, key_file, entry_id)
                    if claim_deadline >= bound:
                        why = f"no executor took the invocation within the queue timeout of {self.queue_timeout:g}s"
                    else:
                        why = f"no executor took any invocation for {self.claim_timeout:g}s (the queue did not move)"
                    return withdrawn(entry_id, why)
                if deadline is not None and now > deadline:
                    raise Refusal(
                        504,
                        f"no answer within the gateway's timeout of {self.timeout:g}s; the invocation goes on",
                        entry_id,
                    )
                await self.waiter.pause(event, (deadline or claim_deadline) - now)


class _Fingerprint:
    """What an Idempotency-Key's request asked: its method, path, query and body, hashed."""

    def __init__(self, invocation: InvocationRequest) -> None:
        self.head = "\0".join((invocation.method, invocation.path, invocation.query))
        self.body = hashlib.sha256()

    def hexdigest(self) -> str:
        return hashlib.sha256(f"{self.head}\0{self.body.hexdigest()}".encode()).hexdigest()


def _same(first: idempotency.Record, fingerprint: str) -> str:
    """The first request's entry, when this request is the same one (else 422)."""
    if first.fingerprint and first.fingerprint != fingerprint:
        raise Refusal(422, "this Idempotency-Key was used for another request (method, path, query or body)")
    return first.entry_id


def _idempotency_key(http: Request) -> str | None:
    values = http.headers.getlist(IDEMPOTENCY_HEADER)
    if not values:
        return None
    if len(values) > 1:
        raise Refusal(400, "Idempotency-Key given more than once")
    key = values[0].strip()
    if not key or len(key.encode()) > idempotency.MAX_KEY:
        raise Refusal(400, f"Idempotency-Key must be 1 to {idempotency.MAX_KEY} bytes")
    return key


def _small(http: Request) -> bool:
    """A body the direct path takes: of a known length, at most DIRECT_MAX_BODY (none at all too)."""
    length = http.headers.get("content-length")
    if length is None:
        return "transfer-encoding" not in http.headers
    return length.isdigit() and int(length) <= DIRECT_MAX_BODY


def _write_body(path: Path, body: bytes) -> None:
    with open(path, "xb") as stream:
        stream.write(body)
        stream.flush()
        os.fsync(stream.fileno())


def _open_body(path: Path) -> BinaryIO:
    return open(path, "xb")  # closed by the caller, in another thread


def _sync_close(stream: BinaryIO) -> None:
    stream.flush()
    os.fsync(stream.fileno())
    stream.close()


def _whereabouts(paths: SpoolPaths, entry_id: str) -> str | None:
    """Which of incoming, active or done holds the entry now (None: none of them)."""
    queue = paths.invocations
    if (queue.done / entry_id).is_dir():
        return "done"
    if (queue.incoming / entry_id).exists():
        return "incoming"
    try:
        with os.scandir(queue.active) as names:
            if any(e.name.partition(".")[0] == entry_id for e in names):
                return "active"
    except FileNotFoundError:
        pass
    # It may have moved from active to done while we looked.
    return "done" if (queue.done / entry_id).is_dir() else None


def _withdraw(paths: SpoolPaths, entry_id: str) -> bool:
    """Takes the unclaimed entry out of incoming/ (one rename: a claim and a withdrawal cannot
    both win); False when an executor claimed it first."""
    aside = paths.tmp / f"withdrawn-{entry_id}-{secrets.token_hex(4)}"
    try:
        os.rename(paths.invocations.incoming / entry_id, aside)
    except FileNotFoundError:
        return False
    shutil.rmtree(aside, ignore_errors=True)
    return True
