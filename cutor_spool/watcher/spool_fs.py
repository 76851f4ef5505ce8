"""The spool's filesystem: its type (`filesystem_type`, which tells notify.py to poll on NFS) and
whether it is known to be slow for a spool: ext4 without a journal.

Without a journal, ext4 will not reuse an inode freed in the last one to five minutes (the
kernel's `find_inode_bit` checks `recently_deleted` only when the filesystem has no journal), so
after removals every new file scans past the recently freed ones. A spool creates several files
per submission and one per judged test, and removes old entries when it prunes: measured on the
development machine, 0.19-0.43 ms per new file after removals against microseconds elsewhere,
and a judged test's result file about 0.86 ms of kernel time
(docs/benchmarks.md, "Issue 18 after a reboot"; docs/deploy.md, "Host tuning: the spool's filesystem").

An ext4 filesystem has a journal when the kernel runs a jbd2 thread for it: `/proc/fs/jbd2/`
has an entry `<device>-<inode>` per journal. The device is found from the mount holding the path
(`/proc/self/mountinfo`'s major:minor) and `/sys/dev/block`. Anything this cannot read answers
"not known to be slow": the check only ever adds a warning.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

ADVICE_SECTION = "docs/deploy.md, 'Host tuning: the spool's filesystem'"


def mount_of(path: Path) -> tuple[str, str] | None:
    """(filesystem type, major:minor) of the mount holding `path` (the longest mount point of
    /proc/self/mountinfo); None when it cannot be read."""
    target = os.path.realpath(path)
    best: tuple[int, str, str] | None = None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                left, sep, right = line.partition(" - ")
                fields, after = left.split(), right.split()
                if not sep or len(fields) < 5 or not after:
                    continue
                point = fields[4].replace("\\040", " ")
                inside = target == point or target.startswith(point.rstrip("/") + "/")
                if inside and (best is None or len(point) >= best[0]):
                    best = (len(point), after[0], fields[2])
    except OSError:
        return None
    return None if best is None else (best[1], best[2])


def filesystem_type(path: Path) -> str:
    """The type of the filesystem holding `path` ("nfs4", "ext4", ...); "" when unknown."""
    mount = mount_of(path)
    return "" if mount is None else mount[0]


def _device_name(major_minor: str) -> str | None:
    try:
        return os.path.basename(os.readlink(f"/sys/dev/block/{major_minor}"))
    except OSError:
        return None


def journal_less_ext4(path: Path) -> str | None:
    """The device's name when `path` is on ext4 without a journal; None otherwise or unknown."""
    mount = mount_of(path)
    if mount is None or mount[0] != "ext4":
        return None
    device = _device_name(mount[1])
    if device is None or not os.path.isdir(f"/proc/fs/ext4/{device}"):
        return None
    try:
        journals = os.listdir("/proc/fs/jbd2")
    except FileNotFoundError:
        journals = []  # no jbd2 at all: no ext4 on this host has a journal
    except OSError:
        return None
    return None if any(name.startswith(f"{device}-") for name in journals) else device


def advice(path: Path) -> str | None:
    """The warning for a spool at `path`, or None when its filesystem is not known to be slow."""
    device = journal_less_ext4(path)
    if device is None:
        return None
    return (
        f"the spool {path} is on ext4 without a journal ({device}): after files are removed, every "
        "new file scans past the inodes freed in the last minutes, and a submission creates several "
        f"(a judged one, one per test). Prefer a journalled ext4, XFS or NFS: {ADVICE_SECTION}"
    )


def warn_if_slow(path: Path) -> None:
    """Logs `advice` once, if any (an executor's start)."""
    message = advice(path)
    if message is not None:
        log.warning("%s", message)
