"""Ids, claim tokens and the names of entries in `active/` and `done/`."""

from __future__ import annotations

import secrets
import time

from cutor_spool.submission import ID_RE


def valid_id(name: str) -> bool:
    return bool(ID_RE.match(name))


def new_token() -> str:
    return secrets.token_hex(8)


def new_id() -> str:
    """A fresh id that sorts by submission time (UTC), unique without coordination."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(4)


def active_name(entry_id: str, token: str) -> str:
    return f"{entry_id}.{token}"


def split_active(name: str) -> tuple[str, str] | None:
    """`<id>.<token>` -> (id, token); None for anything else (temporary files, strays)."""
    entry_id, dot, token = name.partition(".")
    if not dot or not token or not valid_id(entry_id) or not token.isalnum():
        return None
    return entry_id, token


def duplicate_name(entry_id: str, token: str) -> str:
    """The distinct name under which a duplicate of a known id is finalised in `done/`."""
    return f"{entry_id}.duplicate-{token}"


def misnamed_name(token: str) -> str:
    """A valid id for an entry dropped under a name that is not one."""
    return f"badname-{token}"
