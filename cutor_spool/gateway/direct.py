"""The gateway's side of the direct path (runner/invocations/direct.py, docs/gateway.md "The
direct path"): a request with no Idempotency-Key and a small body goes straight to a door of an
executor on this host, over a Unix socket, with no spool entry; when there is no door, or none
has a live instance of the deployment, or its instance is busy, the request takes the spool path
(under the same id, so that a payer's nonce recorded by a door is this request's, not a replay).

Doors are found in `invocations/doors/` (looked at once a `refresh` seconds): those of this host
and boot, whose socket is root's and private (direct_wire.py). Connections are kept open, up to
`per_door` a door; a connection that cannot be made takes the spool path and the door is left
aside for `refresh` seconds. A connection that breaks after the request went out is a 503 with
Retry-After: the request may have run (it is not charged: its block died with the executor), and
running it again through the spool could run it twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from anyio import to_thread

from cutor_spool.documents.deployment import InvocationRequest, Response
from cutor_spool.gateway.answers import RETRY_AFTER, Answer, error_answer, response_answer
from cutor_spool.layout import SpoolPaths
from cutor_spool.runner.invocations.direct_wire import (
    HEAD,
    MAX_HEADER,
    doors_dir,
    frame,
    header_of,
    here,
    private_socket,
)

log = logging.getLogger(__name__)

DIRECT_MAX_BODY = 1 << 16  # larger bodies take the spool path (streamed, never held in memory)
REFRESH = 1.0


@dataclass
class _Door:
    socket: str
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = field(default_factory=list)
    open: int = 0
    aside_until: float = 0.0


class Broken(Exception):
    """The connection broke after the request went out."""


def _find(paths: SpoolPaths) -> list[str]:
    me = here()
    found = []
    try:
        names = sorted(os.listdir(doors_dir(paths)))
    except FileNotFoundError:
        return []
    for name in names:
        try:
            record = json.loads((doors_dir(paths) / name).read_bytes())
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict) or {k: record.get(k) for k in me} != me:
            continue
        address = record.get("socket")
        if isinstance(address, str) and private_socket(address):
            found.append(address)
    return found


class DirectDoors:
    def __init__(self, paths: SpoolPaths, *, per_door: int = 64, refresh: float = REFRESH) -> None:
        self.paths, self.per_door, self.refresh = paths, per_door, refresh
        self._doors: dict[str, _Door] = {}
        self._looked = float("-inf")
        self.served = 0
        self.fell_back = 0

    async def _current(self) -> list[_Door]:
        now = time.monotonic()
        if now - self._looked >= self.refresh:
            self._looked = now
            found = await to_thread.run_sync(_find, self.paths)
            for gone in set(self._doors) - set(found):
                self._drop(self._doors.pop(gone))
            for address in found:
                self._doors.setdefault(address, _Door(address))
        return [d for d in self._doors.values() if d.aside_until <= now]

    def _drop(self, door: _Door) -> None:
        for _, writer in door.idle:
            writer.close()
        door.open -= len(door.idle)
        door.idle.clear()

    async def send(self, entry_id: str, invocation: InvocationRequest, body: bytes) -> Answer | None:
        """The door's answer, or None: take the spool path (nothing ran, nothing was charged)."""
        header = {
            "id": entry_id,
            "cid": invocation.deployment,
            "method": invocation.method,
            "path": invocation.path,
            "query": invocation.query,
            "headers": invocation.headers,
        }
        data = frame(header, body)
        for door in await self._current():
            connection = await self._connection(door)
            if connection is None:
                continue
            try:
                answer, reply = await self._exchange(connection, data)
            except Broken as exc:
                door.open -= 1
                connection[1].close()
                message = f"the executor went away during the request ({exc}); it was not charged"
                return error_answer(503, message, entry_id, [("Retry-After", RETRY_AFTER)])
            except BaseException:  # cancelled (the client went away): the connection is in between
                door.open -= 1
                connection[1].close()
                raise
            door.idle.append(connection)
            kind = answer.get("kind")
            if kind == "answer":
                self.served += 1
                response = Response.model_validate({**answer["response"], "body": None, "body_base64": None})
                return response_answer(response, reply, entry_id)
            if kind == "refused":
                self.served += 1
                return error_answer(int(answer["status"]), str(answer["message"]), entry_id)
        self.fell_back += 1
        return None

    async def _connection(self, door: _Door) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        while door.idle:
            reader, writer = door.idle.pop()
            if not reader.at_eof() and not writer.is_closing():
                return reader, writer
            door.open -= 1
            writer.close()
        if door.open >= self.per_door:
            return None  # busy: the spool path
        door.open += 1
        try:
            return await asyncio.open_unix_connection(door.socket)
        except OSError as exc:
            door.open -= 1
            door.aside_until = time.monotonic() + self.refresh
            log.info("direct door %s: %s; the spool path", door.socket, exc)
            return None

    async def _exchange(
        self, connection: tuple[asyncio.StreamReader, asyncio.StreamWriter], data: bytes
    ) -> tuple[dict[str, Any], bytes]:
        reader, writer = connection
        try:
            writer.write(data)
            await writer.drain()
            (length,) = HEAD.unpack(await reader.readexactly(HEAD.size))
            if length > MAX_HEADER:
                raise Broken("a frame header too large")
            answer = header_of(await reader.readexactly(length))
            reply = await reader.readexactly(answer["length"])
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            raise Broken(str(exc) or type(exc).__name__) from None
        return answer, reply

    def close(self) -> None:
        for door in self._doors.values():
            self._drop(door)
        with contextlib.suppress(Exception):
            self._doors.clear()
