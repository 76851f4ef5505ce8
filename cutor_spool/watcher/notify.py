"""Waking up when something changes in a directory.

inotify (through watchdog) is a hint, never the truth: it sees nothing that another NFS client
did, and its queue can overflow. So every waiter also wakes on a timer, and `poll=True` (automatic
on network filesystems) uses the timer alone.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger(__name__)

NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "fuse.sshfs",
        "9p",
        "ceph",
        "glusterfs",
        "fuse.glusterfs",
        "lustre",
        "beegfs",
        "gpfs",
        "afs",
        "fuse.s3fs",
    }
)


def filesystem_type(path: Path) -> str:
    """The type of the filesystem holding `path` (longest mount point prefix in /proc/mounts)."""
    target = os.path.realpath(path)
    best, kind = "", ""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) < 3:
                    continue
                mount = fields[1].replace("\\040", " ")
                if (target == mount or target.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
                    best, kind = mount, fields[2]
    except OSError:
        return ""
    return kind


def needs_polling(path: Path) -> bool:
    return filesystem_type(path) in NETWORK_FILESYSTEMS


class DirectoryWatch:
    """Calls `on_name(name)` for every entry created in or moved into the watched directories
    (top level only). Start fails softly: without inotify the timers still find everything."""

    def __init__(self, directories: Iterable[Path], on_name: Callable[[Path, str], None]) -> None:
        self._dirs = [Path(d) for d in directories]
        self._on_name = on_name
        self._observer: object | None = None

    def start(self) -> bool:
        try:
            from watchdog.events import FileSystemEvent, FileSystemEventHandler
            from watchdog.observers.inotify import InotifyObserver
        except ImportError:  # pragma: no cover - watchdog is a dependency; inotify is Linux-only
            log.warning("inotify is not available; relying on rescans")
            return False
        on_name = self._on_name

        class Handler(FileSystemEventHandler):
            def __init__(self, directory: Path) -> None:
                self.directory = directory

            def dispatch(self, event: FileSystemEvent) -> None:
                if event.event_type not in ("created", "moved", "modified", "closed"):
                    return
                raw = event.dest_path if event.event_type == "moved" else event.src_path
                path = os.fsdecode(raw)
                if os.path.dirname(path) == str(self.directory):
                    on_name(self.directory, os.path.basename(path))

        observer = InotifyObserver()
        try:
            for directory in self._dirs:
                observer.schedule(Handler(directory), str(directory), recursive=False)
            observer.daemon = True
            observer.start()
        except OSError as exc:
            log.warning("cannot watch %s with inotify (%s); relying on rescans", self._dirs, exc)
            return False
        self._observer = observer
        return True

    def stop(self) -> None:
        observer = self._observer
        if observer is not None:
            observer.stop()  # type: ignore[attr-defined]
            self._observer = None


class Waiter:
    """Blocks until something changes under some directories, or a timeout passes."""

    def __init__(self, directories: Iterable[Path], *, poll: bool = False) -> None:
        self._event = threading.Event()
        self._watch = None if poll else DirectoryWatch(directories, lambda _d, _n: self._event.set())

    def __enter__(self) -> Waiter:
        if self._watch is not None:
            self._watch.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._watch is not None:
            self._watch.stop()

    def wait(self, timeout: float) -> None:
        self._event.wait(timeout)
        self._event.clear()
