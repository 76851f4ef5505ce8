"""Opening a path inside a spool entry one component at a time, never following a symlink.

A spool entry is a directory some client made. `O_NOFOLLOW` guards only the last component of a
path: `open("active/x.tok/d/secret", O_NOFOLLOW)` follows `d` if the client turned it into a
symlink to a root-only directory, and a root worker then reads (or writes) there. So every path
below an *anchor* (a directory of the spool's own: `active/`, a slot's work directory) is opened
from the anchor's directory fd with `openat(..., O_DIRECTORY | O_NOFOLLOW)` per component, and
the last one with `O_NOFOLLOW`. A symlink anywhere below the anchor is an error (ENOTDIR for a
directory component, ELOOP for the last), never a detour.

Why per-component `openat` rather than a private copy of the entry made at the claim: a copy
costs a second pass over every byte of test data (10,000 tests, on NFS) before the first stage
can start, and the copy itself would have to be made with exactly these opens. `openat2`'s
`RESOLVE_NO_SYMLINKS` would do it in one call but Python does not expose it; a loop of `openat`
holds at most two descriptors at a time and works on every filesystem, NFS included. The claim
also takes the entry's directories away from its client (`watcher/custody.py`), so that the names
resolved here cannot change between two opens either.

Nothing here holds a descriptor past the call that needs it: an entry keeps its inode when it is
renamed, and a descriptor kept open would follow a requeued entry into its next claim.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def components(rel: str | PurePosixPath) -> list[str]:
    """The names of a relative path; `..`, absolute paths and empty names are refused (a name
    that could climb out of the anchor is a bug of the caller, not a lookup)."""
    text = str(rel)
    if text in ("", "."):
        return []
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if text.startswith("/") or ".." in parts:
        raise ValueError(f"{text!r} is not a path below its anchor")
    return parts


def relative(path: Path, anchor: Path) -> str:
    """`path` as a path below `anchor` (a ValueError if it is not below it)."""
    return str(path.relative_to(anchor))


@contextmanager
def opened_dir(anchor: Path, rel: str | PurePosixPath = "") -> Iterator[int]:
    """A descriptor of the directory `anchor/rel`, with no symlink followed below `anchor` (the
    anchor itself is the spool's own directory, opened as configured), closed on exit."""
    fd = os.open(anchor, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in components(rel):
            inner = os.open(part, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = inner
        yield fd
    finally:
        os.close(fd)


def open_beneath(anchor: Path, rel: str | PurePosixPath, flags: int, mode: int = 0o644) -> int:
    """Opens the file `anchor/rel` with `flags`, no symlink followed below `anchor`. The caller
    closes the descriptor."""
    parts = components(rel)
    if not parts:
        raise ValueError("no file named below the anchor")
    with opened_dir(anchor, "/".join(parts[:-1])) as parent:
        return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=parent)
