"""Eviction and collection (`cutor-spool gc`).

1. Choose: environments unused for `unused_for` (last use, else when built, on the filesystem's
   clock), then the least recently used until the cached closures fit in `max_size`. An
   environment that a claimed or queued submission has used is never chosen.
2. Evict each one: rename `builds/done/<key>` away (new uses now find nothing and ask for a new
   build), look at its `uses/` markers again (a use that started before the rename shows up
   there: put it back), then delete it and its GC roots on this host.
3. Drop GC roots of environments that are no longer in the spool (evicted from another host,
   or substituted here long ago), then `nix-store --gc` on this host's store.
4. Prune the spool's binary cache of paths that only evicted environments had.

`gc` works on the spool (shared by all hosts) and on the store of the host it runs on; run it on
every host that has a store of its own (`--nix-store` for a separate one).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cutor_spool.builder import cache, nixcmd, process
from cutor_spool.builder.environments import SUBSTITUTED
from cutor_spool.builder.inventory import KEY_RE, CachedEnv, busy_submissions, environments, read_uses
from cutor_spool.builder.keys import short
from cutor_spool.builder.nixcmd import NixSettings
from cutor_spool.config import SpoolConfig
from cutor_spool.errors import BuildError
from cutor_spool.layout import SpoolPaths
from cutor_spool.watcher.clock import FsClock
from cutor_spool.watcher.ids import new_token

log = logging.getLogger(__name__)

FREED = re.compile(r"(\d+) store paths deleted, ([0-9.]+) (KiB|MiB|GiB|TiB|bytes)? ?freed")
_UNITS = {"bytes": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}
GC_TIMEOUT = 3600.0


@dataclass(frozen=True)
class Choice:
    env: CachedEnv
    reason: str


@dataclass
class GcReport:
    evicted: list[dict[str, Any]] = field(default_factory=list)
    kept: int = 0
    in_use: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    roots_removed: int = 0
    store_paths_deleted: int = 0
    store_bytes_freed: int = 0
    cache_files_removed: int = 0
    cache_bytes_freed: int = 0
    size_before: int = 0
    size_after: int = 0

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def union_size(envs: list[CachedEnv]) -> int:
    sizes: dict[str, int] = {}
    for env in envs:
        sizes.update(env.closure)
    return sum(sizes.values())


def choose(
    envs: list[CachedEnv], busy: set[str], now: float, *, unused_for: float | None, max_size: int | None
) -> tuple[list[Choice], list[CachedEnv]]:
    """(what to evict and why, what is in use). Pure: `now` is the filesystem clock."""
    in_use = [e for e in envs if busy & set(e.uses)]
    candidates = [e for e in envs if not busy & set(e.uses)]
    chosen: list[Choice] = []
    if unused_for is not None:
        for env in candidates:
            idle = now - env.last_activity
            if idle > unused_for:
                chosen.append(Choice(env, f"unused for {idle / 86400:.1f} days"))
    if max_size is not None:
        picked = {c.env.key for c in chosen}
        remaining = [e for e in envs if e.key not in picked]
        for env in sorted((e for e in candidates if e.key not in picked), key=lambda e: e.last_activity):
            if union_size(remaining) <= max_size:
                break
            chosen.append(Choice(env, f"over the size budget of {max_size} bytes"))
            remaining = [e for e in remaining if e.key != env.key]
    return chosen, in_use


def evict(paths: SpoolPaths, env: CachedEnv, busy: set[str]) -> str | None:
    """Moves the environment out of the spool and deletes it; the reason it was kept, or None."""
    trash = paths.tmp / f".gc-{env.key}-{new_token()}"
    try:
        os.rename(env.path, trash)
    except FileNotFoundError:
        return "gone already"
    except OSError as exc:
        return f"cannot move it: {exc.strerror}"
    uses = read_uses(trash)
    # Any marker that is new or touched since the inventory was read is a use that began
    # before the rename: that submission may be about to mount the environment.
    fresh = [sid for sid, stamp in uses.items() if sid in busy or stamp != env.uses.get(sid)]
    if fresh:
        try:
            os.rename(trash, env.path)
            return f"used meanwhile by {fresh[0]}"
        except OSError:
            log.warning("gc: %s was used meanwhile but cannot be put back; it will be built again", short(env.key))
    shutil.rmtree(trash, ignore_errors=True)
    return None


def _root_names(roots: Path) -> list[Path]:
    found = []
    for directory in (roots, roots / SUBSTITUTED):
        try:
            found += [directory / e.name for e in os.scandir(directory) if e.is_symlink()]
        except FileNotFoundError:
            continue
    return found


def drop_roots(settings: NixSettings, keep: set[str], evicted: set[str], *, min_age: float, now: float) -> int:
    """Removes cutor-spool's GC roots (build profiles and substituted closures) on this store:
    those of `evicted` keys, and those of keys not in `keep` once they are `min_age` old (a
    build makes its profile before it publishes the environment)."""
    removed = 0
    for link in _root_names(settings.roots_dir):
        key = link.name.split("-", 1)[0]
        if not KEY_RE.match(key) or (key in keep and key not in evicted):
            continue
        try:
            if key not in evicted and now - os.lstat(link).st_mtime < min_age:
                continue
            os.unlink(link)
            removed += 1
        except FileNotFoundError:
            continue
    return removed


def collect_store(settings: NixSettings) -> tuple[int, int]:
    done = process.run(
        nixcmd.collect_garbage_argv(settings),
        env=nixcmd.nix_env(settings, nixcmd.nix_config(settings)),
        deadline=time.monotonic() + GC_TIMEOUT,
    )
    if not done.ok:
        raise BuildError(f"nix-store --gc failed: {done.error_text()}")
    text = (done.stdout + done.stderr).decode("utf-8", "replace")
    match = FREED.search(text)
    if not match:
        return 0, 0
    return int(match.group(1)), int(float(match.group(2)) * _UNITS.get(match.group(3) or "bytes", 1))


def run_gc(
    paths: SpoolPaths,
    config: SpoolConfig,
    settings: NixSettings,
    *,
    unused_for: float | None,
    max_size: int | None,
    dry_run: bool = False,
    collect: bool = True,
) -> GcReport:
    clock = FsClock(paths.tmp, f"gc-{os.getpid()}")
    try:
        now = clock.now()
    finally:
        clock.remove()
    envs = environments(paths)
    busy = busy_submissions(paths)
    report = GcReport(size_before=union_size(envs))
    chosen, in_use = choose(envs, busy, now, unused_for=unused_for, max_size=max_size)
    report.in_use = [e.key for e in in_use]
    evicted: list[CachedEnv] = []
    for choice in chosen:
        item = {"key": choice.env.key, "reason": choice.reason, "closure_size": choice.env.size}
        if dry_run:
            report.evicted.append(item)
            continue
        kept = evict(paths, choice.env, busy)
        if kept is None:
            evicted.append(choice.env)
            report.evicted.append(item)
            log.info("gc: evicted %s (%s)", short(choice.env.key), choice.reason)
        else:
            report.skipped.append({"key": choice.env.key, "reason": kept})
    gone = {e.key for e in evicted}
    remaining = [e for e in envs if e.key not in gone]
    report.kept = len(envs) - len(chosen) if dry_run else len(remaining)
    report.size_after = union_size(remaining)
    if dry_run:
        return report
    pending = _pending_keys(paths)  # being built again: its new profile must stay
    keep = {e.key for e in remaining} | pending
    min_age = 2 * config.nix.build_timeout + 60
    report.roots_removed = drop_roots(settings, keep, gone - pending, min_age=min_age, now=time.time())
    if collect:
        report.store_paths_deleted, report.store_bytes_freed = collect_store(settings)
    drop = {p for e in evicted for p in e.closure}
    if drop:
        keep_paths = {p for e in remaining for p in e.closure}
        pruned = cache.prune(cache.cache_dir(paths), drop, keep_paths, min_age=min_age)
        report.cache_files_removed = pruned.narinfos + pruned.nars
        report.cache_bytes_freed = pruned.bytes
    return report


def _pending_keys(paths: SpoolPaths) -> set[str]:
    keys = set()
    for directory in (paths.builds.incoming, paths.builds.active):
        try:
            keys |= {e.name.split(".", 1)[0] for e in os.scandir(directory)}
        except FileNotFoundError:
            continue
    return keys
