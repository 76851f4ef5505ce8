"""The pinned nixpkgs that spool.yaml names (`nix.nixpkgs`), and its identity.

- A path (absolute, or relative to the spool) is a channel directory with a default.nix. Its
  identity is its NAR hash (`nix hash path`), so the key changes when its content does. Hashing
  real nixpkgs takes about a second, so executors remember it for `PATH_TTL` seconds; builders
  hash again for every build and refuse a request made against other content.
- A flake reference (`github:NixOS/nixpkgs/<rev>`, `path:/srv/nixpkgs`, ...) is locked with
  `nix flake metadata`: the identity is the locked NAR hash and builders fetch the locked URL, so
  every host builds exactly the same source. Indirect references (`nixpkgs`, `flake:...`) are
  refused: they follow a registry and are not pins.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

from cutor_spool.builder import nixcmd, process
from cutor_spool.builder.keys import NixpkgsPin
from cutor_spool.builder.nixcmd import NixSettings
from cutor_spool.errors import BuildError, ConfigError

log = logging.getLogger(__name__)

PATH_TTL = 60.0
RESOLVE_TIMEOUT = 300.0  # fetching a flake's source the first time may take a while


def is_flake_ref(value: str) -> bool:
    return ":" in value.split("/", 1)[0] and not value.startswith("/")


def channel_path(value: str, spool: Path) -> Path:
    path = Path(value)
    if not path.is_absolute():
        path = spool / path
    real = Path(os.path.realpath(path))
    if not (real / "default.nix").is_file():
        raise ConfigError(f"nix.nixpkgs: {value} ({real}) has no default.nix: not a nixpkgs checkout or channel")
    return real


class PinResolver:
    """Resolves spool.yaml's `nix.nixpkgs` to a `NixpkgsPin`, remembering path hashes a while."""

    def __init__(self, value: str | None, spool: Path, settings: NixSettings, *, ttl: float = PATH_TTL) -> None:
        if not value:
            raise ConfigError("nix.nixpkgs is not set in spool.yaml: name a nixpkgs path or a pinned flake reference")
        if is_flake_ref(value) and value.startswith("flake:"):
            raise ConfigError(f"nix.nixpkgs: {value} is an indirect flake reference (a registry name), not a pin")
        self.value = value
        self.spool = spool
        self.settings = settings
        self.ttl = ttl
        self._lock = threading.Lock()
        self._cached: tuple[float, NixpkgsPin] | None = None

    def pin(self, *, fresh: bool = False) -> NixpkgsPin:
        with self._lock:
            now = time.monotonic()
            if not fresh and self._cached is not None and now - self._cached[0] < self.ttl:
                return self._cached[1]
            pin = self._resolve()
            self._cached = (now, pin)
            return pin

    def _resolve(self) -> NixpkgsPin:
        env = nixcmd.nix_env(self.settings, nixcmd.nix_config(self.settings))
        deadline = time.monotonic() + RESOLVE_TIMEOUT
        if is_flake_ref(self.value):
            done = process.run(nixcmd.flake_metadata_argv(self.value), env=env, deadline=deadline)
            if not done.ok:
                raise BuildError(f"cannot lock nix.nixpkgs {self.value}: {done.error_text()}")
            try:
                meta = json.loads(done.stdout)
                identity, url = meta["locked"]["narHash"], meta["url"]
            except (ValueError, KeyError, TypeError) as exc:
                raise BuildError(f"nix flake metadata {self.value}: unexpected output ({exc})") from exc
            return NixpkgsPin(kind="flake", ref=str(url), identity=str(identity))
        path = channel_path(self.value, self.spool)
        done = process.run(nixcmd.hash_path_argv(path), env=env, deadline=deadline)
        if not done.ok:
            raise BuildError(f"cannot hash nix.nixpkgs {path}: {done.error_text()}")
        return NixpkgsPin(kind="path", ref=str(path), identity=done.stdout.decode().strip())
