"""The direct path's frames, between a gateway and an executor's door on the same host (direct.py).

A frame is a 4-byte big-endian length, that many bytes of a JSON header, then the header's
`length` bytes of body. Many frames, one after the other, on one connection (the gateway keeps
its connections open).

    gateway -> door   {"id", "cid", "method", "path", "query", "headers", "length"}   + body
    door -> gateway   {"kind": "answer", "response": <Response without its body>, "length"} + body
                      {"kind": "refused", "status": 401|402|..., "message", "length": 0}
                      {"kind": "fallback", "message", "length": 0}   (no live instance, or busy:
                       nothing ran, nothing was charged; the gateway drops it into the spool)

Where the door publishes itself: `invocations/doors/<worker id>.json` in the spool,
{"host", "boot_id", "socket"}. A gateway uses the doors of its own host and boot only, and a
socket only if it is a socket owned by root that nobody else may open (direct.py makes it so).
"""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
from pathlib import Path
from typing import Any

from cutor_spool.layout import SpoolPaths

HEAD = struct.Struct(">I")
MAX_HEADER = 1 << 20
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def doors_dir(paths: SpoolPaths) -> Path:
    return paths.invocations.root / "doors"


def boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def here() -> dict[str, str]:
    return {"host": socket.gethostname(), "boot_id": boot_id()}


def frame(header: dict[str, Any], body: bytes = b"") -> bytes:
    data = json.dumps({**header, "length": len(body)}, separators=(",", ":")).encode()
    return HEAD.pack(len(data)) + data + body


def header_of(data: bytes) -> dict[str, Any]:
    header = json.loads(data)
    if not isinstance(header, dict) or not isinstance(header.get("length"), int) or header["length"] < 0:
        raise ValueError("not a frame header")
    return header


def private_socket(path: str) -> bool:
    """A socket owned by root that only root may use (what a door makes, direct.py)."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISSOCK(info.st_mode) and info.st_uid == 0 and info.st_mode & 0o077 == 0
