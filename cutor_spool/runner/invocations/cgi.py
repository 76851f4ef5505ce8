"""CGI/1.1 (RFC 3875) between an invocation and the deployment's program: the request's
meta-variables going in, the program's response coming out. Pure functions, no I/O.

Going in (section 4.1): REQUEST_METHOD, PATH_INFO, QUERY_STRING (always set, empty without a
query), SCRIPT_NAME (`/<cid>`, where the gateway mounts the deployment), CONTENT_LENGTH (when there is
a body), CONTENT_TYPE (from the Content-Type header), GATEWAY_INTERFACE, SERVER_PROTOCOL,
SERVER_SOFTWARE, SERVER_NAME, SERVER_PORT; and a protocol-specific HTTP_* variable per header
(4.1.18): the name upper-cased, `-` made `_`, `HTTP_` in front, repeated headers joined with ", ".
Content-Type and Content-Length are not repeated as HTTP_*; Authorization is removed (the RFC's
SHOULD: credentials are the gateway's business) and so is Proxy (httpoxy: HTTP_PROXY would tell
many HTTP libraries inside the program to send their traffic through a host the caller names).
A header name of anything but letters, digits and `-` is refused (`_` would make two names one
variable), as is a value with a control character.

Coming out (section 6): see `parse_response`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cutor_spool import __version__
from cutor_spool.documents.deployment import Response

GATEWAY_INTERFACE = "CGI/1.1"
SERVER_PROTOCOL = "HTTP/1.1"
# Every variable the server itself defines: a header or the owner's env never replaces one.
SERVER_VARIABLES = frozenset(
    {
        "REQUEST_METHOD",
        "PATH_INFO",
        "QUERY_STRING",
        "SCRIPT_NAME",
        "CONTENT_LENGTH",
        "CONTENT_TYPE",
        "GATEWAY_INTERFACE",
        "SERVER_PROTOCOL",
        "SERVER_SOFTWARE",
        "SERVER_NAME",
        "SERVER_PORT",
    }
)
DROPPED_HEADERS = frozenset({"content-type", "content-length", "authorization", "proxy"})
MAX_HEADERS = 100
MAX_HEADER_BYTES = 64 * 1024  # names and values of a request's headers together

_HEADER_NAME = re.compile(r"[A-Za-z0-9-]+")
_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}")  # an RFC 9110 token
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # tab is allowed in a value
# A response header line: an RFC 9110 token, a colon, the value (RFC 3875 6.3).
_FIELD = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*")
_STATUS = re.compile(r"([1-5][0-9][0-9])(?: (.*))?")
CGI_FIELDS = (b"content-type", b"location", b"status")


class BadRequest(ValueError):
    """The invocation's method, path, query or a header cannot be handed to a CGI program."""


@dataclass(frozen=True)
class CgiRequest:
    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body_length: int
    script_name: str


def check_request(method: str, path: str, query: str, headers: Iterable[tuple[str, str]]) -> None:
    """Raises BadRequest naming the first field that cannot be passed on."""
    if not _METHOD.fullmatch(method):
        raise BadRequest(f"method {method!r} is not an HTTP method token")
    if (path and not path.startswith("/")) or _CONTROL.search(path) or " " in path:
        raise BadRequest(f"path {path!r} must be empty or start with /, and hold no spaces or control characters")
    if _CONTROL.search(query) or " " in query:
        raise BadRequest("the query must hold no spaces or control characters")
    headers = list(headers)
    if len(headers) > MAX_HEADERS:
        raise BadRequest(f"{len(headers)} headers: at most {MAX_HEADERS}")
    size = 0
    for name, value in headers:
        if not _HEADER_NAME.fullmatch(name):
            raise BadRequest(f"header name {name!r}: only letters, digits and '-' are accepted")
        if _CONTROL.search(value):
            raise BadRequest(f"header {name}: its value holds a control character")
        size += len(name) + len(value)
    if size > MAX_HEADER_BYTES:
        raise BadRequest(f"the headers take {size} bytes: at most {MAX_HEADER_BYTES}")


def meta_variables(request: CgiRequest) -> dict[str, str]:
    """The request's CGI meta-variables (checked with `check_request` first)."""
    headers: dict[str, str] = {}
    content_type = None
    host = None
    for name, value in request.headers:
        lower = name.lower()
        if lower == "content-type":
            content_type = value
        if lower == "host":
            host = value
        if lower in DROPPED_HEADERS:
            continue
        key = "HTTP_" + name.upper().replace("-", "_")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    server = {
        "GATEWAY_INTERFACE": GATEWAY_INTERFACE,
        "SERVER_PROTOCOL": SERVER_PROTOCOL,
        "SERVER_SOFTWARE": f"cutor-spool/{__version__}",
        "SERVER_NAME": _server_name(host),
        "SERVER_PORT": "80",
        "REQUEST_METHOD": request.method,
        "PATH_INFO": request.path,
        "QUERY_STRING": request.query,
        "SCRIPT_NAME": request.script_name,
    }
    if request.body_length:
        server["CONTENT_LENGTH"] = str(request.body_length)
    if content_type is not None:
        server["CONTENT_TYPE"] = content_type
    return {**headers, **server}


def _server_name(host: str | None) -> str:
    """The Host header without its port, or "localhost" (there is no HTTP server of our own)."""
    if not host:
        return "localhost"
    if host.startswith("["):  # an IPv6 literal
        return host.partition("]")[0] + "]"
    return host.partition(":")[0] or "localhost"


def stage_environment(cgi: Mapping[str, str], owner: Mapping[str, str]) -> dict[str, str]:
    """The run stage's environment, lowest to highest: the caller's HTTP_* variables, the owner's
    env (the opened secrets: a caller's header never replaces one), then the server's own
    meta-variables (the owner's env cannot fake the request's method or path)."""
    http = {k: v for k, v in cgi.items() if k not in SERVER_VARIABLES}
    server = {k: v for k, v in cgi.items() if k in SERVER_VARIABLES}
    return {**http, **owner, **server}


# -- the response ------------------------------------------------------------------------------


def _body_fields(body: bytes) -> dict[str, str]:
    try:
        return {"body": body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"body_base64": base64.b64encode(body).decode("ascii")}


body_fields = _body_fields  # warm_http.py's answers are kept the same way


def bad_gateway(reason: str, status: int = 502) -> Response:
    return Response(status=status, reason=reason, headers=[])


def _first_line(output: bytes) -> bytes:
    return output.split(b"\n", 1)[0].rstrip(b"\r")


def has_header_block(output: bytes) -> bool:
    """Whether the program answered as a CGI script: its first line is a Content-Type, Location
    or Status field (RFC 3875 6.2: every CGI response has at least one of them). Anything else
    is a program that prints no header block: its whole stdout is the body."""
    match = _FIELD.fullmatch(_first_line(output))
    return match is not None and match.group(1).lower() in CGI_FIELDS


def parse_response(output: bytes) -> Response:
    """The program's stdout as a response (RFC 3875 section 6).

    - No header block (`has_header_block`): status 200, the whole stdout as the body, and
      Content-Type text/plain; charset=utf-8 when it is UTF-8, else application/octet-stream.
    - A header block: `name: value` lines (LF or CRLF), ended by an empty line or by the end of
      the output; the rest is the body, byte for byte. `Status: NNN reason` sets the status
      (100-599); without it, a Location makes a redirect (302: a local redirect, a path, is
      answered as a client redirect too: there is no server to re-route it), else 200. Status is
      not repeated among the headers; the others are kept in order.
    - Malformed (a line of the block that is no header field, a bad or repeated Status, two
      Content-Types or Locations): 502 with the reason, and none of the program's output.
    """
    if not has_header_block(output):
        kind = "text/plain; charset=utf-8" if _is_utf8(output) else "application/octet-stream"
        return Response(status=200, headers=[("Content-Type", kind)], **_body_fields(output))
    headers: list[tuple[str, str]] = []
    status: tuple[int, str | None] | None = None
    seen: set[bytes] = set()
    rest = output
    while rest:
        line, _, rest = rest.partition(b"\n")
        line = line.removesuffix(b"\r")
        if not line:
            break
        match = _FIELD.fullmatch(line)
        if match is None:
            return bad_gateway(f"malformed CGI header line: {line[:80]!r}")
        name, value = match.group(1), match.group(2)
        lower = name.lower()
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            return bad_gateway(f"the value of CGI header {name.decode()} is not UTF-8")
        if _CONTROL.search(text):
            return bad_gateway(f"the value of CGI header {name.decode()} holds a control character")
        if lower in CGI_FIELDS and lower in seen:
            return bad_gateway(f"CGI header {name.decode()} given twice")
        seen.add(lower)
        if lower == b"status":
            parsed = _STATUS.fullmatch(text)
            if parsed is None:
                return bad_gateway(f"bad CGI Status {text[:40]!r}: expected a code 100-599 and a reason")
            status = (int(parsed.group(1)), parsed.group(2))
            continue
        headers.append((name.decode("ascii"), text))
    if status is None:
        code = 302 if b"location" in seen else 200
        return Response(status=code, headers=headers, **_body_fields(rest))
    return Response(status=status[0], reason=status[1], headers=headers, **_body_fields(rest))


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
