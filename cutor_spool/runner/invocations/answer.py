"""An invocation's answer as its clients read it (`cutor-spool invoke --wait`, the gateway): where
an entry is, waiting for its end, its response.json and its body, and what its ending means for
the client, which the CLI turns into an exit code and the gateway into an HTTP status.
"""

from __future__ import annotations

import base64
import time
from enum import Enum
from typing import Any

from cutor_spool.atomic import read_json
from cutor_spool.documents.deployment import Response
from cutor_spool.documents.states import RESULT_DIR, Outcome, State
from cutor_spool.documents.status import StatusDocument, read_status
from cutor_spool.layout import SpoolPaths
from cutor_spool.runner.invocations.run import RESPONSE
from cutor_spool.watcher.notify import Waiter, needs_polling


class Ending(Enum):
    ANSWERED = "answered"  # done, and the program answered well (outcome ok)
    FAILED = "failed"  # done, but the program failed or ran out of a limit (a 502 or 504 response)
    INVALID = "invalid"  # refused: the request's or the deployment's fault
    ERROR = "error"  # the system gave up on it
    CANCELLED = "cancelled"


def ending(status: StatusDocument) -> Ending:
    if status.state == State.INVALID:
        return Ending.INVALID
    if status.state == State.ERROR:
        return Ending.ERROR
    if status.state == State.CANCELLED:
        return Ending.CANCELLED
    return Ending.ANSWERED if status.outcome == Outcome.OK else Ending.FAILED


def final_status(paths: SpoolPaths, entry_id: str) -> StatusDocument | None:
    """The entry's status once it is in invocations/done/ with a terminal state, else None."""
    status = read_status(paths.invocations.done / entry_id)
    return status if status is not None and status.terminal else None


def unclaimed(paths: SpoolPaths, entry_id: str) -> bool:
    """Whether the entry is still waiting in invocations/incoming/."""
    return (paths.invocations.incoming / entry_id).exists()


def wait_for(paths: SpoolPaths, entry_id: str, timeout: float | None) -> StatusDocument | None:
    """The invocation's final status once it is in invocations/done/, or None on timeout. Blocks
    its thread (one inotify instance per call): the CLI's way; the gateway shares one watch."""
    queue = paths.invocations
    deadline = None if timeout is None else time.monotonic() + timeout
    with Waiter([queue.active, queue.done], poll=needs_polling(paths.root)) as waiter:
        while True:
            status = final_status(paths, entry_id)
            if status is not None:
                return status
            if deadline is not None and time.monotonic() > deadline:
                return None
            waiter.wait(0.1)


def response_json(paths: SpoolPaths, entry_id: str) -> dict[str, Any] | None:
    """response.json as JSON (None when there is none, or it is torn or not an object)."""
    try:
        data = read_json(paths.invocations.done / entry_id / RESULT_DIR / RESPONSE)
    except (OSError, ValueError):
        return None
    return dict(data) if isinstance(data, dict) else None


def read_response(paths: SpoolPaths, entry_id: str) -> Response | None:
    data = response_json(paths, entry_id)
    return None if data is None else Response.read(data)


def body_of(response: Response) -> bytes:
    if response.body_base64 is not None:
        return base64.b64decode(response.body_base64)
    return (response.body or "").encode()
