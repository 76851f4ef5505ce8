"""Priority lanes: which queued submission a worker claims first.

A submission asks for a lane in submission.yaml (`priority: high | normal | low`, or a number
from -100 to 100; high is 10, normal 0, low -10). `cutor-spool submit` copies it into the entry's
`.ready` marker (`{"at": …, "priority": 10}`), so that a worker can order a backlog of 10,000
entries by opening one small file per new entry, never parsing their YAML; a drop by hand states
its lane the same way (a `.ready` without one, or no `.ready`, is normal). The spool caps it:
`max_priority` in spool.yaml (a lane above it is taken at the cap, and the executor refuses the
submission's own `priority:` above it as invalid).

Claims take the highest lane first, oldest first within a lane, without starving the lower ones:
after `FAIR_EVERY` claims in a row that passed over a non-empty lower lane, the next claim takes
the entry that has waited longest, whatever its lane. A backlog alone in a lower lane never
builds up that count, so a new high-priority entry is the very next claim: it waits for at most
the stages already running. Several workers (on several hosts, over NFS) each order their own
view the same way; the renames decide who gets an entry, as always.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cutor_spool.layout import READY
from cutor_spool.yamlload import load_yaml

LANES = {"high": 10, "normal": 0, "low": -10}
FAIR_EVERY = 4
MAX_MARKER = 4096


def lane_value(value: str | int) -> int:
    return LANES[value] if isinstance(value, str) else int(value)


def marker_priority(entry: Path, cap: int) -> int:
    """The lane an entry's `.ready` asks for, capped; 0 when it names none (or is not JSON)."""
    try:
        fd = os.open(entry / READY, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        raw = os.read(fd, MAX_MARKER)
    except OSError:
        return 0
    finally:
        os.close(fd)
    try:
        data = json.loads(raw) if raw.strip() else {}
        value = data.get("priority", 0) if isinstance(data, dict) else 0
        priority = lane_value(value) if isinstance(value, str | int) and not isinstance(value, bool) else 0
    except (ValueError, KeyError, TypeError):
        return 0
    return max(-100, min(cap, priority))


def yaml_priority(path: Path, limit: int = 8 << 20) -> int:
    """The lane a submission.yaml asks for (0 when it names none or cannot be read: the executor
    reports what is wrong with it)."""
    try:
        with open(path, "rb") as fh:
            data = load_yaml(fh.read(limit).decode())
        value = data.get("priority", 0) if isinstance(data, dict) else 0
        return lane_value(value) if isinstance(value, str | int) and not isinstance(value, bool) else 0
    except (OSError, ValueError, KeyError):
        return 0
