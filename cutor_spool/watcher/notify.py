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
from typing import TYPE_CHECKING

from cutor_spool.watcher.spool_fs import filesystem_type

if TYPE_CHECKING:
    from watchdog.observers.inotify_c import InotifyFD

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


def needs_polling(path: Path) -> bool:
    return filesystem_type(path) in NETWORK_FILESYSTEMS


class _Callback:
    """Receives raw inotify events for one directory (watchdog's `WatchCallback` protocol).

    The protocol is watchdog's low-level part and it grows: 7.0 has `on_event` and
    `on_watch_deleted` and drops the kernel's overflow event unseen (the rescans then find what
    was lost); 7.1 adds `on_queue_overflow` and then `on_events_lost`, called once every watch has
    recovered. This class has every method of both, so one type satisfies either protocol; the
    rescan is asked for from `on_events_lost`, when a rescan sees the watches repaired."""

    def __init__(
        self, directory: Path, on_name: Callable[[Path, str], None], on_overflow: Callable[[], None] | None
    ) -> None:
        self.directory, self.on_name, self.overflow = directory, on_name, on_overflow
        self.active = True

    def on_event(self, event: object) -> None:
        name = getattr(event, "name", b"")
        if name:
            self.on_name(self.directory, os.fsdecode(name))

    def on_watch_deleted(self, wd: object) -> None:
        if self.active:
            log.warning("%s is no longer watched (deleted or moved?); relying on rescans", self.directory)

    def on_queue_overflow(self) -> None:
        log.warning("inotify queue overflowed on %s; rescanning", self.directory)

    def on_events_lost(self) -> None:
        if self.overflow is not None:
            self.overflow()


class DirectoryWatch:
    """Calls `on_name(directory, name)` for every entry created in or renamed into the watched
    directories (top level only); `on_overflow` when inotify lost events. Start fails softly:
    without inotify the timers still find everything.

    It subscribes to IN_CREATE and IN_MOVED_TO only, through watchdog's low-level `InotifyFD`.
    watchdog's observer also takes IN_MOVED_FROM (every claim renames an entry *out* of
    incoming/) and holds each for 0.5 s to pair it with a move target; events queued behind it
    wait too, which put half a second on every drop-to-claim."""

    def __init__(
        self,
        directories: Iterable[Path],
        on_name: Callable[[Path, str], None],
        on_overflow: Callable[[], None] | None = None,
    ) -> None:
        self._dirs = [Path(d) for d in directories]
        self._on_name = on_name
        self._on_overflow = on_overflow
        self._fd: InotifyFD | None = None
        self._callbacks: list[_Callback] = []

    def start(self) -> bool:
        try:
            from watchdog.observers.inotify_c import CallbackId, InotifyConstants, InotifyFD, Mask
        except ImportError:  # pragma: no cover - watchdog is a dependency; inotify is Linux-only
            log.warning("inotify is not available; relying on rescans")
            return False
        mask = Mask(InotifyConstants.IN_CREATE | InotifyConstants.IN_MOVED_TO | InotifyConstants.IN_ONLYDIR)
        try:
            fd = InotifyFD()
            fd.daemon = True
            fd.start()
        except OSError as exc:
            log.warning("cannot start inotify (%s); relying on rescans", exc)
            return False
        try:
            for i, directory in enumerate(self._dirs):
                callback = _Callback(directory, self._on_name, self._on_overflow)
                self._callbacks.append(callback)
                fd.add_callback(os.fsencode(directory), mask, callback, CallbackId(i))
        except OSError as exc:
            log.warning("cannot watch %s with inotify (%s); relying on rescans", self._dirs, exc)
            fd.stop()  # the thread too (see stop)
            fd.join(5)
            return False
        self._fd = fd
        return True

    def stop(self) -> None:
        fd = self._fd
        for callback in self._callbacks:
            callback.active = False
        if fd is not None:
            self._fd = None
            # Stop the thread, not just the descriptor: closed, its loop reads nothing at once,
            # forever, and spins a core for the life of the process. stop() closes it too.
            fd.stop()
            if fd is not threading.current_thread():
                fd.join(5)


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
