"""The HTTP answer of an invocation's ending, and the gateway's own answers (docs/gateway.md,
"Statuses").

- done: the program's response.json, as it is (its status, its headers but the hop-by-hop ones,
  its body): 502 when its output was not a CGI response or it failed, 504 when it ran out of
  time (runner/invocations/run.py made those);
- invalid: the problem's field says whose fault it is: the request's (`request`,
  `request.json`: 400; `body`: 413; `signature`: 401; `payer`: 402), an unknown deployment (404), else the
  deployment's (its build failed, it does not verify, its env does not open: 502);
- error or cancelled: the system's fault, never the client's: 503 with Retry-After, and its
  Idempotency-Key released so that a retry runs anew.

The gateway's own answers are JSON: `{"error": ..., "invocation": id, "problems": [...]}`.
Every answer about an entry carries its id in X-Request-Id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from cutor_spool.deployments import idempotency
from cutor_spool.documents.deployment import Response
from cutor_spool.documents.status import StatusDocument
from cutor_spool.layout import SpoolPaths
from cutor_spool.runner.invocations.answer import Ending, body_of, ending, read_response

REQUEST_ID = "X-Request-Id"
RETRY_AFTER = "5"
# Response fields the program may not set: the connection's (RFC 9110 7.6.1), the framing
# (the gateway frames the body), and the gateway's own.
DROPPED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        REQUEST_ID.lower(),
    }
)
INVALID_STATUS = {"request": 400, "request.json": 400, "body": 413, "payer": 402, "signature": 401}


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    entry_id: str | None = None


class Refusal(Exception):
    """The gateway answers with this status and message (a JSON body) and nothing more."""

    def __init__(self, status: int, message: str, entry_id: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.entry_id = entry_id

    def answer(self) -> Answer:
        return error_answer(self.status, self.message, self.entry_id)


def error_answer(
    status: int,
    message: str,
    entry_id: str | None = None,
    headers: list[tuple[str, str]] | None = None,
    **extra: object,
) -> Answer:
    document: dict[str, object] = {"error": message}
    if entry_id is not None:
        document["invocation"] = entry_id
    document.update(extra)
    body = (json.dumps(document, ensure_ascii=False) + "\n").encode()
    return Answer(status, [("Content-Type", "application/json"), *(headers or [])], body, entry_id)


def withdrawn(entry_id: str, why: str) -> Answer:
    message = f"{why}; it was withdrawn, nothing ran"
    return error_answer(503, message, entry_id, [("Retry-After", RETRY_AFTER)])


def response_answer(response: Response, body: bytes, entry_id: str, *, bodiless: bool | None = None) -> Answer:
    """The program's response as the client gets it (from response.json, or a direct door)."""
    if response.status < 200:
        return error_answer(502, f"the program answered with the interim status {response.status}", entry_id)
    if (not body if bodiless is None else bodiless) and response.status >= 500:
        return error_answer(response.status, response.reason or "the program gave no answer", entry_id)
    headers = [(n, v) for n, v in response.headers if n.lower() not in DROPPED]
    return Answer(response.status, headers, b"" if response.status in (204, 304) else body, entry_id)


def answer_of(paths: SpoolPaths, status: StatusDocument, key_file: Path | None) -> Answer:
    """The answer to an invocation that ended (blocking: it reads response.json)."""
    entry_id = status.id
    kind = ending(status)
    if kind in (Ending.ANSWERED, Ending.FAILED):
        response = read_response(paths, entry_id)
        if response is None:
            return error_answer(502, f"the invocation ended ({status.outcome}) without a response", entry_id)
        return response_answer(
            response, body_of(response), entry_id, bodiless=response.body is None and response.body_base64 is None
        )
    if kind == Ending.INVALID:
        problems = [{"where": p.where, "message": p.message} for p in status.errors or []]
        where = problems[0]["where"] if problems else ""
        code = INVALID_STATUS.get(where, 502)
        if where == "deployment" and "unknown CID" in problems[0]["message"]:
            code = 404
        return error_answer(code, "the invocation was refused", entry_id, problems=problems)
    if key_file is not None:
        idempotency.release(key_file, entry_id)
    why = status.reason or f"the invocation ended {status.state.value}"
    return error_answer(503, why, entry_id, [("Retry-After", RETRY_AFTER)])
