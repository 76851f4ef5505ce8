"""The incremental index behind the page: `status/_index.json`.

Re-reading every `done/<id>/result/status.json` on each regeneration would cost a file open per
submission (10,000 submissions: seconds on NFS). Instead the index keeps, per entry of `done/` (and
of `builds/done/`, `invocations/done/`, `deployments/`: see deployments.py for the last two), its
*signature* and the summary the page shows. A regeneration lists the directory (one `scandir` plus
an `lstat` per entry, no file opened), compares signatures, and reads and renders only the entries
that are new or changed; entries that disappeared (evicted, moved away by an operator) lose their
page.

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
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cutor_spool.atomic import write_bytes
from cutor_spool.web_status.model import BUILD_KEYS, SUMMARY_KEYS

INDEX_NAME = "_index.json"
FORMAT = 4

# One finished entry of invocations/done/ (deployments.invocation_summary): never its body or response.
INVOCATION_KEYS = (
    *("name", "kind", "deployment", "state", "outcome", "http_status", "finished", "finished_unix", "duration"),
    *("payer", "held", "charged", "payment"),  # result/payment.json: who paid, what was held and charged
)
# One deployment of deployments/ (deployments.deployment_summary): its spec's public fields, its build.
DEPLOYMENT_KEYS = ("cid", "owner", "created", "problem", "build_state", "build_reason", "build_at")
# Names that may become page file names: ids, and the distinct names of duplicates (`<id>.duplicate-…`).
PAGE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")

Signature = list[int]


def scan(directory: Path, known: Collection[str] = ()) -> dict[str, Signature]:
    """Entry name -> signature for every directory in `directory` (dot-names are temporary).
    Names in `known` were checked when they were first seen."""
    found: dict[str, Signature] = {}
    try:
        it = os.scandir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return found
    with it:
        for entry in it:
            if entry.name not in known and (entry.name.startswith(".") or not PAGE_NAME_RE.match(entry.name)):
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
    """Records of one directory: name -> signature and summary. Every summary of a section has the
    section's `keys`, so a summary is kept as the list of its values, in memory and in the file
    (a third of the size of repeated keys); a dict is made only for what is rendered, while counts
    and ordering read single columns. With 10,000 records this is the difference between a cheap
    update and one that spends its time converting records it does not show."""

    keys: tuple[str, ...]
    sigs: dict[str, Signature] = field(default_factory=dict)
    rows: dict[str, list[Any]] = field(default_factory=dict)
    # The directory's own (inode, mtime, ctime) once a scan found it settled (see generate.py).
    directory: Signature | None = None
    dirty: bool = False

    def __contains__(self, name: object) -> bool:
        return name in self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def changes(self, scanned: dict[str, Signature]) -> tuple[list[str], list[str]]:
        changed = [name for name, sig in scanned.items() if self.sigs.get(name) != sig]
        removed = [name for name in self.sigs if name not in scanned]
        return sorted(changed), removed

    def put(self, name: str, sig: Signature, summary: dict[str, Any]) -> None:
        self.sigs[name] = sig
        self.rows[name] = [summary.get(k) for k in self.keys]
        self.dirty = True

    def remove(self, name: str) -> None:
        self.sigs.pop(name, None)
        self.rows.pop(name, None)
        self.dirty = True

    def summary(self, name: str) -> dict[str, Any]:
        return dict(zip(self.keys, self.rows[name], strict=True))

    def summaries(self, names: list[str] | None = None) -> list[dict[str, Any]]:
        return [self.summary(n) for n in (self.rows if names is None else names)]

    def column(self, key: str) -> list[Any]:
        i = self.keys.index(key)
        return [row[i] for row in self.rows.values()]

    def ordered(self, key: str) -> list[str]:
        """Names by `key` (missing values first), then by name."""
        i = self.keys.index(key)
        rows = self.rows
        return sorted(rows, key=lambda name: (rows[name][i] or "", name))

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": self.directory,
            "keys": list(self.keys),
            "records": {name: [self.sigs[name], row] for name, row in self.rows.items()},
        }

    @classmethod
    def from_json(cls, data: Any, keys: tuple[str, ...]) -> Section:
        """Records written with other keys (another version) are dropped: they are read again."""
        section = cls(keys)
        if not isinstance(data, dict) or data.get("keys") != list(keys):
            return section
        records = data.get("records")
        width = len(keys)
        for name, item in records.items() if isinstance(records, dict) else []:
            if isinstance(item, list) and len(item) == 2 and isinstance(item[1], list) and len(item[1]) == width:
                section.sigs[name] = item[0]
                section.rows[name] = item[1]
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
    done: Section = field(default_factory=lambda: Section(SUMMARY_KEYS))
    builds: Section = field(default_factory=lambda: Section(BUILD_KEYS))
    invocations: Section = field(default_factory=lambda: Section(INVOCATION_KEYS))
    deployments: Section = field(default_factory=lambda: Section(DEPLOYMENT_KEYS))
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
            Section.from_json(data.get("done"), SUMMARY_KEYS),
            Section.from_json(data.get("builds"), BUILD_KEYS),
            Section.from_json(data.get("invocations"), INVOCATION_KEYS),
            Section.from_json(data.get("deployments"), DEPLOYMENT_KEYS),
            [h for h in history if isinstance(h, str)] if isinstance(history, list) else [],
        )

    def sections(self) -> tuple[Section, ...]:
        return (self.done, self.builds, self.invocations, self.deployments)

    @property
    def dirty(self) -> bool:
        return any(section.dirty for section in self.sections()) or self.history_dirty

    def save(self, path: Path) -> None:
        data = {
            "format": FORMAT,
            "render": self.render,
            "done": self.done.to_json(),
            "builds": self.builds.to_json(),
            "invocations": self.invocations.to_json(),
            "deployments": self.deployments.to_json(),
            "history": self.history,
        }
        # No fsync: the index is a cache of what the spool holds, rebuilt if it is ever lost.
        write_bytes(path, json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode(), fsync=False)
        for section in self.sections():
            section.dirty = False
        self.history_dirty = False


def paginate(names: list[str], section: Section, size: int) -> list[tuple[list[str], str]]:
    """History pages of `names` (oldest finish first), `size` entries each, with a signature per
    page. An entry that finishes lands on the last page, so only that page changes; a late finish
    time (a skewed clock, a recommit) shifts the pages after it, which are then rendered again."""
    pages = []
    for start in range(0, len(names), size):
        members = names[start : start + size]
        # An entry whose summary changed was renamed into done/ again: its ctime changed.
        changes = sum(section.sigs[name][1] for name in members)
        last = start + size >= len(names)
        digest = hashlib.sha256(f"{last}:{changes}:".encode() + "\n".join(members).encode())
        pages.append((members, digest.hexdigest()[:32]))
    return pages
