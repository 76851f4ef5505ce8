"""The incremental index behind the page: `status/_index.json`.

Re-reading every `done/<id>/result/status.json` on each regeneration would cost a file open per
submission (10,000 submissions: seconds on NFS). Instead the index keeps, per entry of `done/` (and
of `builds/done/`), its *signature* and the summary the page shows. A regeneration lists the
directory (one `scandir` plus an `lstat` per entry, no file opened), compares signatures, and reads
and renders only the entries that are new or changed; entries that disappeared (evicted, moved
away by an operator) lose their page.

The signature is the entry directory's (inode, ctime, mtime). Entries in `done/` are final, and
everything that could still change one goes through a rename (a recommit after a crash, a
duplicate's commit, an operator putting an entry back), which sets the ctime of the renamed
directory on Linux filesystems and on NFS servers; the inode catches an entry deleted and
replaced by another of the same name.

Several workers, on several hosts, may regenerate at once without any lock: every file is written
atomically (temporary name, rename), pages are written before the index that records them, and
each writer's index describes pages it wrote itself. The worst interleaving leaves an index that
is older than the pages (harmless: the next regeneration renders those entries again). The one
case it cannot repair by itself, a done entry that changes twice while two writers race over it,
needs `cutor-spool status-page --full`.

A missing, unreadable or older-format index, or one written by other templates, means a full
rebuild, which is always correct (only slower).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cutor_spool.atomic import write_bytes

INDEX_NAME = "_index.json"
FORMAT = 2
# Names that may become page file names: ids, and the distinct names of duplicates (`<id>.duplicate-…`).
PAGE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")

Signature = list[int]


def scan(directory: Path) -> dict[str, Signature]:
    """Entry name -> signature for every directory in `directory` (dot-names are temporary)."""
    found: dict[str, Signature] = {}
    try:
        it = os.scandir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return found
    with it:
        for entry in it:
            if entry.name.startswith(".") or not PAGE_NAME_RE.match(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                found[entry.name] = [st.st_ino, st.st_ctime_ns, st.st_mtime_ns]
    return found


@dataclass
class Section:
    """Records of one directory: name -> signature and summary. Summaries of a section all have
    the same keys, so the file stores each as a list of values (a third of the size of repeated
    keys, and as much faster to read and write)."""

    sigs: dict[str, Signature] = field(default_factory=dict)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The directory's own (inode, mtime, ctime) when its scan found nothing new, see `unchanged`.
    directory: Signature | None = None
    dirty: bool = False

    def changes(self, scanned: dict[str, Signature]) -> tuple[list[str], list[str]]:
        changed = [name for name, sig in scanned.items() if self.sigs.get(name) != sig]
        removed = [name for name in self.sigs if name not in scanned]
        return sorted(changed), removed

    def put(self, name: str, sig: Signature, summary: dict[str, Any]) -> None:
        self.sigs[name] = sig
        self.records[name] = summary
        self.dirty = True

    def remove(self, name: str) -> None:
        self.sigs.pop(name, None)
        self.records.pop(name, None)
        self.dirty = True

    def summaries(self) -> list[dict[str, Any]]:
        return list(self.records.values())

    def to_json(self) -> dict[str, Any]:
        keys = list(next(iter(self.records.values()), {}))
        return {
            "directory": self.directory,
            "keys": keys,
            "records": {name: [self.sigs[name], [rec.get(k) for k in keys]] for name, rec in self.records.items()},
        }

    @classmethod
    def from_json(cls, data: Any) -> Section:
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            return cls()
        keys, records = data["keys"], data.get("records")
        section = cls()
        for name, item in records.items() if isinstance(records, dict) else []:
            if isinstance(item, list) and len(item) == 2 and isinstance(item[0], list) and isinstance(item[1], list):
                section.sigs[name] = item[0]
                section.records[name] = dict(zip(keys, item[1], strict=False))
        directory = data.get("directory")
        section.directory = directory if isinstance(directory, list) else None
        return section


def directory_stamp(path: Path) -> Signature | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_mtime_ns, st.st_ctime_ns]


# Directory timestamps are coarse (the kernel's clock tick): an entry committed in the same tick
# as a scan leaves the directory's mtime as the scan saw it. A stamp is trusted only once it is
# older than this, on the filesystem's clock.
STAMP_SETTLE = 2.0


@dataclass
class Index:
    render: str  # what rendered the pages: a change of templates re-renders everything
    done: Section = field(default_factory=Section)
    builds: Section = field(default_factory=Section)
    history: list[str] = field(default_factory=list)  # one signature per history page
    history_dirty: bool = False

    @classmethod
    def load(cls, path: Path, render: str) -> Index:
        try:
            with open(path, "rb") as fh:
                data = json.loads(fh.read())
        except (OSError, ValueError):
            return cls(render)
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("render") != render:
            return cls(render)
        history = data.get("history")
        return cls(
            render,
            Section.from_json(data.get("done")),
            Section.from_json(data.get("builds")),
            [h for h in history if isinstance(h, str)] if isinstance(history, list) else [],
        )

    @property
    def dirty(self) -> bool:
        return self.done.dirty or self.builds.dirty or self.history_dirty

    def save(self, path: Path) -> None:
        data = {
            "format": FORMAT,
            "render": self.render,
            "done": self.done.to_json(),
            "builds": self.builds.to_json(),
            "history": self.history,
        }
        # No fsync: the index is a cache of what the spool holds, rebuilt if it is ever lost.
        write_bytes(path, json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode(), fsync=False)
        self.done.dirty = self.builds.dirty = self.history_dirty = False


def finish_order(summary: dict[str, Any]) -> tuple[str, str]:
    return (summary.get("finished") or "", summary.get("name") or "")


def paginate(ordered: list[dict[str, Any]], section: Section, size: int) -> list[tuple[list[dict[str, Any]], str]]:
    """History pages of `ordered` (oldest finish first), `size` entries each, with a signature per
    page. An entry that finishes lands on the last page, so only that page changes; a late finish
    time (a skewed clock, a recommit) shifts the pages after it, which are then rendered again."""
    pages = []
    for start in range(0, len(ordered), size):
        members = ordered[start : start + size]
        digest = hashlib.sha256(b"last" if start + size >= len(ordered) else b"more")
        for summary in members:
            digest.update(f"{summary['name']}:{section.sigs[summary['name']]}\n".encode())
        pages.append((members, digest.hexdigest()[:32]))
    return pages
