"""When is an entry in incoming/ ready to claim?

`cutor-spool submit` writes `.ready` and renames a finished directory in: ready at once. A plain
`cp -r` has no marker, so the entry is ready once nothing in it has changed for `settle` seconds on
the filesystem's clock. Both mtime and ctime count: `cp -a` preserves old mtimes, but no copy can
preserve ctime.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from cutor_spool.layout import READY

MAX_WALK = 20_000


def newest_change(entry: Path, limit: int = MAX_WALK) -> float:
    """The latest mtime or ctime in the tree (symlinks not followed); stops after `limit` entries
    (a huge tree is then judged by what was seen; validation will reject it anyway)."""
    st = os.lstat(entry)
    newest = max(st.st_mtime, st.st_ctime)
    if not stat.S_ISDIR(st.st_mode):
        return newest
    pending = [entry]
    seen = 0
    while pending and seen < limit:
        try:
            it = os.scandir(pending.pop())
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        with it:
            for child in it:
                seen += 1
                try:
                    cst = child.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                newest = max(newest, cst.st_mtime, cst.st_ctime)
                if stat.S_ISDIR(cst.st_mode):
                    pending.append(Path(child.path))
    return newest


def seconds_until_ready(entry: Path, now: Callable[[], float], settle: float) -> float:
    """0 when the entry may be claimed; otherwise how long to wait before looking again.
    `now` (the filesystem clock) is only read when there is no `.ready`.
    Raises FileNotFoundError if the entry is gone (claimed by someone else)."""
    if os.path.lexists(entry / READY):
        return 0.0
    newest = newest_change(entry)
    quiet = now() - newest
    return 0.0 if quiet >= settle else settle - quiet
