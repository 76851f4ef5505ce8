"""systemd unit templates for the workers, shipped with the package (`cutor-spool systemd`).

    cutor-spool-executor@.service   one executor per instance (@1, @2, ...)
    cutor-spool-builder@.service    one builder per instance
    cutor-spool-gateway.service     the HTTP gateway to deployments (one per host is enough)
    cutor-spool.target              every enabled instance; stop/restart them all at once
    cutor-spool.env                 the host's settings (spool path, concurrency, state dir)

Templates, not one unit with a count: each instance is a worker with its own pid, heartbeat and
restart policy, scaled with `systemctl enable --now cutor-spool-executor@{1..4}`. The files carry
two placeholders, filled in when they are printed: the `cutor-spool` executable they run (the one
that prints them, by default: the units then run exactly what was installed) and the path of the
environment file. Why each setting is there is written in the unit files themselves.
"""

from __future__ import annotations

import os
import shutil
import sys
from importlib import resources
from pathlib import Path

UNITS = (
    "cutor-spool-executor@.service",
    "cutor-spool-builder@.service",
    "cutor-spool-gateway.service",
    "cutor-spool.target",
)
ENV_NAME = "cutor-spool.env"
DEFAULT_ENV_FILE = Path("/etc/cutor-spool/cutor-spool.env")


def default_executable() -> str:
    """The `cutor-spool` being run now, else the one on PATH."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "cutor-spool" and argv0.is_file():
        return os.path.abspath(argv0)
    found = shutil.which("cutor-spool")
    return os.path.abspath(found) if found else "/usr/local/bin/cutor-spool"


def _exec_word(value: str) -> str:
    """One word of an Exec line: `%` is a specifier and spaces split words unless quoted."""
    value = value.replace("%", "%%")
    if any(c.isspace() or c in "\"'\\;$" for c in value):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$") + '"'
    return value


def _template(name: str) -> str:
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def units(executable: str, env_file: Path) -> dict[str, str]:
    """File name -> text of each unit, for this executable and environment file."""
    if not os.path.isabs(executable):
        raise ValueError(f"{executable!r}: systemd needs an absolute path to the executable")
    if not env_file.is_absolute():
        raise ValueError(f"{env_file}: systemd needs an absolute path to the environment file")
    env = str(env_file).replace("%", "%%")
    return {name: _template(name).replace("@BIN@", _exec_word(executable)).replace("@ENV_FILE@", env) for name in UNITS}


def environment_file() -> str:
    return _template(ENV_NAME)
