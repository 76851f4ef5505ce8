"""Nix command lines, built by small pure functions (testable without running anything).

Every option reaches Nix through its argv or `NIX_CONFIG` in the child's environment, never by
editing /etc/nix/nix.conf. Substituters are off unless spool.yaml names some: an unreachable
cache makes every cold build wait seconds on DNS. Evaluation of anything a submission wrote runs
with `restrict-eval` (no host files, no URLs); builds run with Nix's sandbox and build users.
"""

from __future__ import annotations

import hashlib
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cutor_spool.config import NixConfig

GCROOTS_NAME = "cutor-spool"
# The child's whole environment: nothing of the worker's own (it may hold secrets) reaches Nix.
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


@dataclass(frozen=True)
class NixSettings:
    """How this worker runs Nix. `store_root` is a separate store (ROOT/nix/store, with its own
    database and GC roots), as another host would have."""

    store_root: Path | None = None
    spool_tag: str = "spool"
    sandbox: bool = True
    sandbox_paths: tuple[str, ...] = ()
    substituters: tuple[str, ...] = ()
    trusted_public_keys: tuple[str, ...] = ()
    max_log: int = 4 * 2**20
    home: Path = Path("/root")

    @classmethod
    def from_config(
        cls, nix: NixConfig, spool: Path, *, store_root: Path | None = None, home: Path | None = None
    ) -> NixSettings:
        return cls(
            store_root=store_root,
            spool_tag=spool_tag(spool),
            sandbox=nix.sandbox,
            sandbox_paths=tuple(nix.sandbox_paths),
            substituters=tuple(nix.substituters),
            trusted_public_keys=tuple(nix.trusted_public_keys),
            max_log=nix.build_log,
            home=home or Path(os.environ.get("HOME") or "/root"),
        )

    @property
    def state_dir(self) -> Path:
        """/nix/var/nix of this store, as a host path."""
        return (self.store_root or Path("/")) / "nix" / "var" / "nix"

    @property
    def roots_dir(self) -> Path:
        """Where this spool's GC roots live: inside gcroots/ (every link there is a root), one
        directory per spool, so that `gc` of one spool never drops another's roots."""
        return self.state_dir / "gcroots" / GCROOTS_NAME / self.spool_tag

    def host_path(self, store_path: str) -> Path:
        """Where a store path is on this host (differs from the path itself in a separate store)."""
        if self.store_root is None:
            return Path(store_path)
        return self.store_root / store_path.lstrip("/")


def spool_tag(spool: Path) -> str:
    """A name for a spool on this host: its real path, hashed."""
    return "spool-" + hashlib.sha256(os.fsencode(os.path.realpath(spool))).hexdigest()[:16]


def host_system() -> str:
    machine = platform.machine().lower()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    return f"{arch}-{platform.system().lower()}"


def nix_config(
    settings: NixSettings,
    *,
    restricted: bool = False,
    substituters: tuple[str, ...] | None = None,
    trusted_public_keys: tuple[str, ...] | None = None,
    registry: Path | None = None,
) -> str:
    subs = settings.substituters if substituters is None else substituters
    keys = settings.trusted_public_keys if trusted_public_keys is None else trusted_public_keys
    lines = [
        "experimental-features = nix-command flakes",
        f"substituters = {' '.join(subs)}",
        f"trusted-public-keys = {' '.join(keys)}",
        "require-sigs = true",
        f"sandbox = {'true' if settings.sandbox else 'false'}",
        # A host that cannot sandbox must say so in spool.yaml, not be downgraded silently.
        "sandbox-fallback = false",
        f"extra-sandbox-paths = {' '.join(settings.sandbox_paths)}",
        f"max-build-log-size = {settings.max_log}",
        "warn-dirty = false",
        "allow-import-from-derivation = false" if restricted else "allow-import-from-derivation = true",
        f"restrict-eval = {'true' if restricted else 'false'}",
        "allowed-uris = ",
        # Pinned references need no registry; an unset one would be fetched from GitHub.
        f"flake-registry = {registry}" if registry else "flake-registry = ",
    ]
    return "\n".join(lines) + "\n"


def nix_env(settings: NixSettings, config_text: str, *, tmpdir: Path | None = None) -> dict[str, str]:
    env = {**BASE_ENV, "HOME": str(settings.home), "NIX_CONFIG": config_text, "NIX_PATH": ""}
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    return env


def store_args(settings: NixSettings) -> list[str]:
    return ["--store", str(settings.store_root)] if settings.store_root else []


def eval_argv(
    settings: NixSettings,
    driver: Path,
    *,
    search_path: Mapping[str, Path],
    args: Mapping[str, str],
) -> list[str]:
    """`nix eval --json` of the driver's `info` (instantiating the environment's derivation).
    Every value reaches the driver as a string argument (`--argstr`), never as Nix code."""
    argv = ["nix", "eval", *store_args(settings), "--json"]
    for name, path in search_path.items():
        argv += ["-I", f"{name}={path}"]
    argv += ["--file", str(driver)]
    for name, value in args.items():
        argv += ["--argstr", name, value]
    return [*argv, "info"]


def dev_env_argv(settings: NixSettings, drv_path: str, profile: Path) -> list[str]:
    """Builds the environment and prints it as a bash script; `--profile` roots it (an indirect
    GC root) so that it can be printed again later without evaluation."""
    return ["nix", "print-dev-env", *store_args(settings), "--print-build-logs", "--profile", str(profile), drv_path]


def path_info_argv(settings: NixSettings, path: str) -> list[str]:
    return ["nix", "path-info", *store_args(settings), "--json", "--recursive", "--size", "--closure-size", path]


def copy_to_cache_argv(settings: NixSettings, cache_dir: Path, secret_key: Path, path: str) -> list[str]:
    url = f"file://{cache_dir}?compression=zstd&secret-key={secret_key}"
    return ["nix", "copy", *store_args(settings), "--to", url, path]


def substitute_argv(settings: NixSettings, path: str, root: Path) -> list[str]:
    """Realises `path` (and its closure) from substituters into this store and roots it."""
    return ["nix-store", *store_args(settings), "--realise", path, "--add-root", str(root)]


def check_validity_argv(settings: NixSettings, paths: list[str]) -> list[str]:
    return ["nix-store", *store_args(settings), "--check-validity", "--print-invalid", *paths]


def collect_garbage_argv(settings: NixSettings) -> list[str]:
    return ["nix-store", *store_args(settings), "--gc"]


def hash_path_argv(path: Path) -> list[str]:
    return ["nix", "hash", "path", "--type", "sha256", str(path)]


def flake_metadata_argv(ref: str) -> list[str]:
    return ["nix", "flake", "metadata", "--json", "--no-write-lock-file", ref]


def generate_key_argv(name: str) -> list[str]:
    return ["nix", "key", "generate-secret", "--key-name", name]
