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
from cutor_spool.layout import SpoolPaths
from cutor_spool.watcher.ids import split_active
from cutor_spool.watcher.queue import iso

KEY_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class CachedEnv:
    key: str
    path: Path
    record: dict[str, Any]
    uses: dict[str, float] = field(default_factory=dict)  # submission id -> last use (fs clock)
    created: float = 0.0  # mtime of result.json

    @property
    def status(self) -> str:
        return str(self.record.get("status") or "unknown")

    @property
    def size(self) -> int:
        return int(self.record.get("closure_size") or 0)

    @property
    def last_used(self) -> float | None:
        return max(self.uses.values()) if self.uses else None

    @property
    def last_activity(self) -> float:
        return max(self.last_used or 0.0, self.created)

    @property
    def closure(self) -> dict[str, int]:
        out = {}
        for item in self.record.get("paths") or []:
            if isinstance(item, list | tuple) and len(item) == 2:
                out[str(item[0])] = int(item[1] or 0)
        return out

    def to_json(self) -> dict[str, Any]:
        last = self.last_used
        return {
            "key": self.key,
            "status": self.status,
            "request": self.record.get("request"),
            "packages": [_package_json(p) for p in self.record.get("packages") or [] if isinstance(p, dict)],
            "env_path": self.record.get("env_path"),
            "closure_size": self.record.get("closure_size"),
            "paths": len(self.closure),
            "built_at": self.record.get("built_at"),
            "build_time": self.record.get("build_time"),
            "builder": self.record.get("builder"),
            "nixpkgs": self.record.get("nixpkgs"),
            "system": self.record.get("system"),
            "uses": len(self.uses),
            "last_used": iso(last) if last else None,
            "message": self.record.get("message") if self.status != "ok" else None,
        }


def _package_json(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "attr": p.get("attr"),
        "name": p.get("pname") or p.get("name") or p.get("attr"),
        "version": p.get("version") or None,
        "path": p.get("path"),
        "size": p.get("closure_size") or p.get("nar_size"),
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
        record = read_json(entry / RESULT_NAME)
        created = os.stat(entry / RESULT_NAME).st_mtime
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
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
        for raw in env.record.get("packages") or []:
            if not isinstance(raw, dict) or not raw.get("path"):
                continue
            pkg = _package_json(raw)
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
