"""How checkers quote the program's output in a message: short, one line, printable."""

from __future__ import annotations

EXCERPT = 60


def excerpt(data: bytes, limit: int = EXCERPT) -> str:
    text = data[: limit * 4].decode("utf-8", "replace")
    shown = text[:limit].encode("unicode_escape").decode("ascii")
    return repr(shown + ("..." if len(text) > limit or len(data) > limit * 4 else ""))


def plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def first_difference(a: bytes, b: bytes) -> int:
    """The offset of the first byte where `a` and `b` differ (or the shorter one's length): equal
    blocks are compared as slices, so a 64 MiB output is not walked byte by byte in Python."""
    common = min(len(a), len(b))
    step = 1 << 16
    at = 0
    while at < common and a[at : at + step] == b[at : at + step]:
        at += step
    end = min(at + step, common)
    while at < end and a[at] == b[at]:
        at += 1
    return min(at, common)
