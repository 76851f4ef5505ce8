"""Turning view data into HTML: the jinja2 environment, its filters, and atomic page writes.

Everything a submission controls (its output, ids, messages, file names) reaches the page only
through jinja2 with autoescaping on for every template: a program that prints `<script>` shows
that text. Control characters other than newline and tab are shown as `\\xNN`, so an escape
sequence cannot hide text on the page. Pages also carry a Content-Security-Policy that allows no
inline script, as a second line of defence.
"""

from __future__ import annotations

import hashlib
import re
import time
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from cutor_spool import __version__
from cutor_spool.atomic import write_bytes
from cutor_spool.ledger import format_amount
from cutor_spool.web_status.index import FORMAT
from cutor_spool.web_status.model import GOOD_OUTCOMES

PACKAGE = "cutor_spool.web_status"
MISSING = "\u2013"  # an en dash: "no value"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def seconds(value: float | None) -> str:
    if value is None:
        return MISSING
    if value < 10:
        return f"{value:.3f} s"
    if value < 120:
        return f"{value:.1f} s"
    minutes, secs = divmod(int(value), 60)
    return f"{minutes}m {secs:02d}s"


def size(value: float | None) -> str:
    if value is None:
        return MISSING
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return str(value)


def age(value: float | None) -> str:
    if value is None:
        return MISSING
    if value < 90:
        return f"{value:.0f} s"
    if value < 90 * 60:
        return f"{value / 60:.0f} min"
    if value < 48 * 3600:
        return f"{value / 3600:.1f} h"
    return f"{value / 86400:.1f} d"


def clock(value: str | None) -> str:
    """`2026-01-02T03:04:05.678Z` -> `2026-01-02 03:04:05` (UTC, as every spool timestamp)."""
    if not value:
        return MISSING
    return value.replace("T", " ")[:19]


def visible(value: Any) -> str:
    out = "" if value is None else str(value)
    out = out.replace("\r\n", "\n")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", out)


def credits(value: int | None) -> str:
    """Micro-credits as credits with six decimals (the ledger's `format_amount`)."""
    return MISSING if value is None else format_amount(value)


def score(value: float | None) -> str:
    return MISSING if value is None else f"{value:g}"


_BUSY = frozenset(
    {"queued", "claimed", "installing_dependencies", "dependencies_installed", "compiling", "compiled"}
    | {"running", "testing", "building", "pending"}
)


def tone(value: str | None) -> str:
    """CSS class for a state, an outcome, a verdict or a stage status."""
    if value is None or value in ("unknown", "done", "skipped"):  # "done": the outcome says how it went
        return "neutral"
    if value in GOOD_OUTCOMES or value in ("alive", "built", "success", "ready"):
        return "good"
    if value in ("partial", "stale"):
        return "warn"
    if value in _BUSY:
        return "busy"
    return "bad"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader(PACKAGE, "templates"),
        autoescape=True,  # every template, whatever its name: all output is HTML
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        {"seconds": seconds, "size": size, "age": age, "clock": clock, "visible": visible, "score": score}
        | {"tone": tone, "credits": credits}
    )
    return env


ENV = _environment()


def _asset_digest() -> str:
    digest = hashlib.sha256(f"{__version__}:{FORMAT}".encode())
    for folder in ("templates", "static"):
        for item in sorted(resources.files(PACKAGE).joinpath(folder).iterdir(), key=lambda p: p.name):
            if item.is_file():
                digest.update(item.name.encode() + b"\0" + item.read_bytes())
    return digest.hexdigest()[:16]


# Pages rendered by other templates are rendered again (the index records this value).
RENDER_VERSION = _asset_digest()


def render(template: str, **context: Any) -> bytes:
    return ENV.get_template(template).render(**context).encode("utf-8")


def write_page(path: Path, data: bytes) -> None:
    # No fsync: every page can be rendered again from the spool; a rename still makes it whole.
    write_bytes(path, data, fsync=False)


def install_static(out: Path) -> None:
    """Copies the stylesheet and script into `status/static/` when they differ (an upgrade)."""
    target = out / "static"
    target.mkdir(exist_ok=True)
    for item in resources.files(PACKAGE).joinpath("static").iterdir():
        if not item.is_file():
            continue
        data = item.read_bytes()
        dest = target / item.name
        try:
            if dest.read_bytes() == data:
                continue
        except OSError:
            pass
        write_page(dest, data)


def iso_now(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + "Z"
