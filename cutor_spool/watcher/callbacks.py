"""Telling someone that a submission ended: its `notify:` URL (as Judge0's `callback_url`) and the
operators' `notify.command` in spool.yaml.

Durable, at least once, never twice on purpose:

1. When an executor commits a submission, it writes the outbox entry `notify/<id>.json` (the
   URL, if the submission named one that the spool allows) before it says anything else.
2. A sender takes an entry by renaming it to `notify/.sending-<id>-<worker>` (one rename: of
   several workers on several hosts exactly one wins), POSTs the final `status.json` as JSON, with
   `timeout` per try and up to `retries` tries with backoff (1 s, 2 s, 4 s, ...), runs the command
   with the same JSON on its stdin, then writes the delivery record `result/notify.json` into the
   entry and removes the outbox file.
3. A sender that died mid-way leaves its `.sending-` file; after `lease_timeout` any worker's
   maintenance puts it back. So a callback may come twice after a crash (at least once), but one
   that was delivered is not sent again by design: receivers should use the id to deduplicate.

What the spool allows (`notify:` in spool.yaml): `urls: false` (the default) refuses a
submission's own URL as `invalid` (a callback is a request from the executor's host: to a cloud
metadata address or an internal service it is a server-side request forgery); `urls: true` with
`allowed_hosts` (host names or `*.domain` patterns; empty: any) allows them; `command` is the
operators' own hook, run for every submission that ends.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from cutor_spool import __version__
from cutor_spool.atomic import read_bytes, write_json
from cutor_spool.config import NotifyConfig
from cutor_spool.documents.states import RESULT_DIR
from cutor_spool.documents.status import read_status
from cutor_spool.layout import SpoolPaths
from cutor_spool.yamlload import load_yaml

log = logging.getLogger(__name__)

SENDING = ".sending-"
RECORD = "notify.json"


def url_problem(url: str, config: NotifyConfig) -> str | None:
    """Why this spool refuses `url` as a submission's `notify`, or None."""
    if not config.urls:
        return "this spool does not allow notify URLs (spool.yaml notify.urls)"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    if config.allowed_hosts and not any(fnmatch.fnmatch(parts.hostname, p) for p in config.allowed_hosts):
        return f"host {parts.hostname!r} is not in this spool's notify.allowed_hosts"
    return None


def url_of(entry: Path, config: NotifyConfig) -> str | None:
    """The entry's `notify:` when the spool allows it (read again at the end: an entry that ended
    before validation, out of attempts say, is still told)."""
    try:
        data = load_yaml(read_bytes(entry / "submission.yaml", 8 << 20, beneath=entry.parent).decode())
    except Exception:  # unreadable or invalid: nothing to call
        return None
    url = data.get("notify") if isinstance(data, dict) else None
    return url if isinstance(url, str) and url_problem(url, config) is None else None


class Outbox:
    def __init__(self, paths: SpoolPaths, config: NotifyConfig, *, worker: str, lease_timeout: float) -> None:
        self.paths = paths
        self.config = config
        self.worker = worker
        self.lease_timeout = lease_timeout
        self.dir = paths.notify

    @property
    def enabled(self) -> bool:
        return self.config.urls or self.config.command is not None

    def ended(self, entry: Path) -> None:
        """Called after the commit of `entry` (done/<name>): queue its callback, then send it on a
        thread of its own so that the worker takes its next submission at once."""
        if not self.enabled:
            return
        url = url_of(entry, self.config) if self.config.urls else None
        if url is None and self.config.command is None:
            return
        self.dir.mkdir(exist_ok=True)
        write_json(self.dir / f"{entry.name}.json", {"id": entry.name, "url": url})
        threading.Thread(target=self.send, args=(entry.name,), name=f"notify-{entry.name}", daemon=True).start()

    def send(self, name: str) -> bool:
        """Delivers outbox entry `name` if this worker wins it."""
        taken = self.dir / f"{SENDING}{name}-{self.worker}"
        try:
            os.rename(self.dir / f"{name}.json", taken)
        except FileNotFoundError:
            return False  # another sender has it
        try:
            item = json.loads(taken.read_bytes())
            record = self._deliver(name, item.get("url"))
            entry = self.paths.submissions.done / name
            if entry.is_dir():
                write_json(entry / RESULT_DIR / RECORD, record, beneath=self.paths.submissions.done)
        except Exception:
            log.exception("%s: notify failed", name)
        finally:
            taken.unlink(missing_ok=True)
        return True

    def _deliver(self, name: str, url: str | None) -> dict[str, Any]:
        status = read_status(self.paths.submissions.done / name)
        body = json.dumps(status.dump() if status else {"id": name}).encode()
        record: dict[str, Any] = {}
        if url is not None:
            record["url"] = _post(url, body, name, self.config.timeout, self.config.retries)
        if self.config.command is not None:
            record["command"] = _run(self.config.command, body, name, status, self.config.timeout)
        return record

    def recover(self) -> None:
        """Maintenance: puts back what a dead sender left (older than the lease timeout) and sends
        what is waiting."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return
        now = time.time()
        for name in names:
            path = self.dir / name
            if name.startswith(SENDING):
                try:
                    if now - path.lstat().st_mtime > self.lease_timeout:
                        entry = name[len(SENDING) :].rsplit("-", 1)[0]
                        os.rename(path, self.dir / f"{entry}.json")
                except FileNotFoundError:
                    continue
        for name in os.listdir(self.dir):  # sent on threads: maintenance must not wait on a receiver
            if name.endswith(".json") and not name.startswith("."):
                entry = name.removesuffix(".json")
                threading.Thread(target=self.send, args=(entry,), name=f"notify-{entry}", daemon=True).start()


def _post(url: str, body: bytes, name: str, timeout: float, retries: int) -> dict[str, Any]:
    tries: list[str] = []
    for attempt in range(retries):
        request = urllib.request.Request(  # noqa: S310 (http or https only: url_problem)
            url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": f"cutor-spool/{__version__}",
                "X-Cutor-Spool-Id": name,
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (as above)
                if 200 <= response.status < 300:
                    return {"delivered": True, "status": response.status, "tries": attempt + 1, "errors": tries}
                tries.append(f"HTTP {response.status}")
        except urllib.error.HTTPError as exc:
            tries.append(f"HTTP {exc.code}")
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            tries.append(str(getattr(exc, "reason", exc)))
        if attempt + 1 < retries:
            time.sleep(min(2**attempt, 30))
    log.warning("%s: notify URL not delivered after %d tries: %s", name, retries, tries[-1] if tries else "")
    return {"delivered": False, "tries": retries, "errors": tries}


def _run(command: str, body: bytes, name: str, status: Any, timeout: float) -> dict[str, Any]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "CUTOR_SPOOL_ID": name,
        "CUTOR_SPOOL_STATE": str(status.state) if status else "",
        "CUTOR_SPOOL_OUTCOME": str(status.outcome or "") if status else "",
    }
    try:
        argv = ["/bin/sh", "-c", command]
        proc = subprocess.run(argv, input=body, env=env, timeout=timeout, capture_output=True, check=False)
    except subprocess.TimeoutExpired:
        return {"exit_code": None, "error": f"timed out after {timeout}s"}
    return {"exit_code": proc.returncode, "stderr": proc.stderr[-500:].decode(errors="replace")}
