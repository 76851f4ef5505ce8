"""Retention: removing finished submissions, by hand (`cutor-spool prune`) or by the workers
themselves (`retention:` in spool.yaml).

Only `done/` is ever pruned: what is there is final (DESIGN section 2), so no worker can be using
it. An entry is removed in two steps: one rename of `done/<id>` into `tmp/` (atomic; of two pruners
racing over it, on one host or many over NFS, exactly one wins and the other sees ENOENT and moves
on), then the removal of the renamed tree, which no reader of `done/` can see half-done. A pruner
that dies between the two leaves a `tmp/.pruned-*` tree that the next prune removes.

An entry's age is its end: the mtime of its `result/status.json` (the last write of its worker),
against the spool's filesystem clock, not the host's (hosts' clocks drift; the file server stamps
mtimes). An entry without a readable status (an operator's leftover) is aged by its directory.
`keep_failed` keeps every entry that did not end done with outcome ok or accepted: the ones worth
a second look.

The status page follows by itself: its index drops entries that disappeared from `done/`, and
their pages with them, at its next regeneration.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cutor_spool.documents.states import RESULT_DIR, Outcome, State
from cutor_spool.documents.status import read_status
from cutor_spool.layout import SpoolPaths
from cutor_spool.watcher.clock import FsClock

log = logging.getLogger(__name__)

PRUNED_PREFIX = ".pruned-"
GOOD = frozenset({Outcome.OK, Outcome.ACCEPTED})
LEFTOVER_AGE = 3600.0  # a half-removed tree older than this was left by a pruner that died


@dataclass
class Pruned:
    removed: list[str] = field(default_factory=list)
    kept_failed: int = 0
    freed: int = 0  # bytes, as counted before removal (0 on a dry run of an unreadable tree)


def _entries(done: Path) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(done) as it:
            yield from (e for e in it if not e.name.startswith(".") and e.is_dir(follow_symlinks=False))
    except FileNotFoundError:
        return


def _ended_at(entry: Path) -> float:
    try:
        return os.lstat(entry / RESULT_DIR / "status.json").st_mtime
    except OSError:
        return os.lstat(entry).st_mtime


def _size(tree: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(tree):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _failed(entry: Path) -> bool:
    status = read_status(entry)
    return status is None or status.state != State.DONE or status.outcome not in GOOD


def prune(
    paths: SpoolPaths, *, older_than: float, keep_failed: bool = False, dry_run: bool = False, now: float | None = None
) -> Pruned:
    """Removes (or with `dry_run` lists) the entries of `done/` that ended more than `older_than`
    seconds ago by the spool's clock."""
    now = FsClock(paths.tmp, f"prune-{os.getpid()}").now() if now is None else now
    result = Pruned()
    for entry in _entries(paths.submissions.done):
        path = Path(entry.path)
        try:
            if now - _ended_at(path) < older_than:
                continue
        except FileNotFoundError:
            continue  # pruned by someone else meanwhile
        if keep_failed and _failed(path):
            result.kept_failed += 1
            continue
        size = _size(path)
        if not dry_run and not _remove(paths, path):
            continue
        result.removed.append(entry.name)
        result.freed += size
    if not dry_run:
        _remove_leftovers(paths, now)
    return result


def _remove(paths: SpoolPaths, entry: Path) -> bool:
    trash = paths.tmp / f"{PRUNED_PREFIX}{entry.name}-{secrets.token_hex(4)}"
    try:
        os.rename(entry, trash)
    except FileNotFoundError:
        return False  # another pruner won
    shutil.rmtree(trash, ignore_errors=True)
    return True


def _remove_leftovers(paths: SpoolPaths, now: float) -> None:
    try:
        names = [n for n in os.listdir(paths.tmp) if n.startswith(PRUNED_PREFIX)]
    except FileNotFoundError:
        return
    for name in names:
        tree = paths.tmp / name
        try:
            if now - os.lstat(tree).st_mtime > LEFTOVER_AGE:
                shutil.rmtree(tree, ignore_errors=True)
        except FileNotFoundError:
            continue


class Retention:
    """The workers' own pruning, from the maintenance thread (at most once per
    `retention.interval`: maintenance.Every). Several workers pruning at once is safe (see the
    module's docstring)."""

    def __init__(self, paths: SpoolPaths, *, older_than: float, keep_failed: bool) -> None:
        self.paths = paths
        self.older_than = older_than
        self.keep_failed = keep_failed

    def __call__(self) -> None:
        pruned = prune(self.paths, older_than=self.older_than, keep_failed=self.keep_failed)
        if pruned.removed:
            log.info("retention: removed %d finished submission(s), %d bytes", len(pruned.removed), pruned.freed)
