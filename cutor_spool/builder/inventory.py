"""What is cached, and who used it (`cutor-spool packages`; `gc` decides from the same data).

Read from the spool alone (no Nix needed): each `builds/done/<key>/result.json` lists the
environment's packages with their store paths and sizes, and `uses/<submission-id>` markers
count the submissions that used it; the newest marker's mtime (stamped by the file server) is
its last use.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cutor_spool.atomic import read_json
from cutor_spool.builder.requests import RESULT_NAME, USES_NAME
from cutor_spool.documents.build import BuildRecord, BuiltPackage
from cutor_spool.layout import SpoolPaths
from cutor_spool.watcher.claim import iso
from cutor_spool.watcher.ids import split_active

KEY_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class CachedEnv:
    key: str
    path: Path
    record: BuildRecord
    uses: dict[str, float] = field(default_factory=dict)  # submission id -> last use (fs clock)
    created: float = 0.0  # mtime of result.json

    @property
    def status(self) -> str:
        return str(self.record.status)

    @property
    def size(self) -> int:
        return self.record.closure_size or 0

    @property
    def last_used(self) -> float | None:
        return max(self.uses.values()) if self.uses else None

    @property
    def last_activity(self) -> float:
        return max(self.last_used or 0.0, self.created)

    @property
    def closure(self) -> dict[str, int]:
        return self.record.closure

    @property
    def packages(self) -> list[dict[str, Any]]:
        return [_package_json(p) for p in self.record.packages or []]

    def to_json(self) -> dict[str, Any]:
        last = self.last_used
        record = self.record
        return {
            "key": self.key,
            "status": self.status,
            "request": record.request,
            "packages": self.packages,
            "env_path": record.env_path,
            "closure_size": record.closure_size,
            "paths": len(self.closure),
            "built_at": record.built_at,
            "build_time": record.build_time,
            "builder": record.builder,
            "nixpkgs": record.nixpkgs,
            "system": record.system,
            "uses": len(self.uses),
            "last_used": iso(last) if last else None,
            "message": record.message if self.status != "ok" else None,
        }


def _package_json(p: BuiltPackage) -> dict[str, Any]:
    return {
        "attr": p.attr,
        "name": p.pname or p.name or p.attr,
        "version": p.version or None,
        "path": p.path,
        "size": p.closure_size or p.nar_size,
    }


def read_uses(entry: Path) -> dict[str, float]:
    uses = {}
    try:
        with os.scandir(entry / USES_NAME) as it:
            for item in it:
                try:
                    uses[item.name] = item.stat(follow_symlinks=False).st_mtime
                except FileNotFoundError:
                    continue
    except (FileNotFoundError, NotADirectoryError):
        pass
    return uses


def read_env(entry: Path) -> CachedEnv | None:
    try:
        data = read_json(entry / RESULT_NAME)
        created = os.stat(entry / RESULT_NAME).st_mtime
    except (OSError, ValueError):
        return None
    record = BuildRecord.read(data)
    if record is None:
        return None
    return CachedEnv(entry.name, entry, record, read_uses(entry), created)


def environments(paths: SpoolPaths) -> list[CachedEnv]:
    """Every environment in builds/done/ (failed ones too), most recently used first."""
    found = []
    try:
        names = [e.name for e in os.scandir(paths.builds.done) if KEY_RE.match(e.name)]
    except FileNotFoundError:
        return []
    for name in names:
        env = read_env(paths.builds.done / name)
        if env is not None:
            found.append(env)
    found.sort(key=lambda e: e.last_activity, reverse=True)
    return found


def busy_submissions(paths: SpoolPaths) -> set[str]:
    """Ids of submissions that are claimed or queued (a requeued one will use its env again)."""
    ids = set()
    subs = paths.submissions
    for directory, active in ((subs.active, True), (subs.incoming, False)):
        try:
            names = [e.name for e in os.scandir(directory)]
        except FileNotFoundError:
            continue
        for name in names:
            parsed = split_active(name) if active else (name, "")
            if parsed is not None:
                ids.add(parsed[0])
    return ids


def packages(envs: list[CachedEnv]) -> list[dict[str, Any]]:
    """Every package of the ok environments, once per store path: which environments have it,
    how many submissions used it and when last."""
    by_path: dict[str, dict[str, Any]] = {}
    users: dict[str, set[str]] = {}
    latest: dict[str, float] = {}
    for env in envs:
        if env.status != "ok":
            continue
        for pkg in env.packages:
            if not pkg["path"]:
                continue
            path = str(pkg["path"])
            by_path.setdefault(path, {**pkg, "environments": 0})["environments"] += 1
            users.setdefault(path, set()).update(env.uses)
            latest[path] = max(latest.get(path, 0.0), env.last_used or 0.0)
    out = []
    for path, item in by_path.items():
        item["uses"] = len(users[path])
        item["last_used"] = iso(latest[path]) if latest[path] else None
        out.append(item)
    out.sort(key=lambda p: (str(p.get("name") or ""), str(p.get("version") or ""), str(p["path"])))
    return out
