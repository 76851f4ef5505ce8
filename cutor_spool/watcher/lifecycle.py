"""What a worker process needs around its queue loop: its signals, strict mode, and the spool's
paths, checked before it touches anything (watcher/worker.py uses them)."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

from cutor_spool.errors import ConfigError
from cutor_spool.layout import SpoolPaths

log = logging.getLogger(__name__)

STRICT_ENV = "CUTOR_SPOOL_STRICT"


def strict_mode() -> bool:
    """True when `CUTOR_SPOOL_STRICT` is set (and not "0"): see the module's docstring."""
    return os.environ.get(STRICT_ENV, "") not in ("", "0")


class Signals:
    """SIGTERM/SIGINT: first one stops taking work and lets current work finish (up to `grace`
    seconds, then hands it back); a second one hands back at once."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.hurry = threading.Event()

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        if self.stopping.is_set():
            log.warning("second %s: handing back current work now", signal.Signals(signum).name)
            self.hurry.set()
        else:
            log.warning("%s: finishing current work, taking no more", signal.Signals(signum).name)
            self.stopping.set()


def spool_paths(spool: Path) -> SpoolPaths:
    """The spool's paths, absolute (they are handed to Nix as file:// URLs and written into
    records). A worker never makes a spool: a directory without `spool.yaml` is a typo or an NFS
    share that is not mounted yet, and a worker that made an empty spool there would wait forever
    on a queue nobody writes to. It refuses with a ConfigError (exit 78, which the systemd units
    do not restart). A spool made by an older version gets the folders it lacks (a new queue)."""
    paths = SpoolPaths(spool.absolute())
    if not paths.config.is_file():
        raise ConfigError(
            f"{paths.root} is not an initialised spool (it has no {paths.config.name}): "
            f"create it with `cutor-spool --spool {paths.root} init`, or mount the share first"
        )
    paths.complete()
    return paths
