"""Helpers for the tests that run real Nix (offline: substituters off) with the stand-in channel
of tests/nixchannel, real builder and executor processes, and a real spool."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, ROOT, ExecutorProcess, need, write_config

from cutor_spool.builder.nixcmd import spool_tag

CHANNEL = ROOT / "tests" / "nixchannel"
# The stand-in channel's packages link host programs, and its builders are the host's bash: with
# Nix's sandbox on, builds must see these (real nixpkgs needs none of them).
SANDBOX_PATHS = ["/bin", "/usr", "/lib", "/lib64"]
NIX_ENV = {
    "NIX_CONFIG": "experimental-features = nix-command flakes\nsubstituters =\nsandbox = true\n"
    "extra-sandbox-paths = /bin /usr /lib /lib64\n",
    "NIX_PATH": "",
}


def need_nix() -> None:
    need(shutil.which("nix") is not None and shutil.which("nix-store") is not None, "Nix is not installed")
    need(os.geteuid() == 0, "Nix builds and the sandbox need root")


def nix_config(spool: Path, *, top: dict[str, Any] | None = None, **nix: Any) -> None:
    """The conftest's fast spool config (with `top` keys over it), and nix: pointing at the
    stand-in channel."""
    settings: dict[str, Any] = {
        "nixpkgs": str(CHANNEL),
        "sandbox_paths": SANDBOX_PATHS,
        "build_timeout": "120s",
    }
    settings.update(nix)
    write_config(spool, nix=settings, **(top or {}))


def unique() -> str:
    return secrets.token_hex(6)


def nix(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, env={**os.environ, **NIX_ENV})


@pytest.fixture
def spool_roots(spool: Path) -> Iterator[None]:
    """Removes the spool's GC roots once every worker of the test has stopped (set up before the
    `executors` and `builders` fixtures, so torn down after them)."""
    yield
    shutil.rmtree(Path("/nix/var/nix/gcroots/cutor-spool") / spool_tag(spool), ignore_errors=True)


@pytest.fixture
def builders(tmp_path: Path) -> Iterator[Callable[..., ExecutorProcess]]:
    """Factory: `builders(spool, "--nix-store", DIR)` starts a real `cutor-spool builder` process
    (signing with a key of this test's own)."""
    started: list[ExecutorProcess] = []

    def start(spool: Path, *args: str) -> ExecutorProcess:
        n = len(started)
        argv = [
            "builder",
            "--signing-key",
            str(tmp_path / "signing.key"),
            "--state-dir",
            str(tmp_path / f"builder-state-{n}"),
            *args,
        ]
        proc = ExecutorProcess(spool, argv, tmp_path / f"builder-{n}.log")
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
    for spool in {proc.spool for proc in started}:  # this spool's GC roots: the store may collect it all
        shutil.rmtree(Path("/nix/var/nix/gcroots/cutor-spool") / spool_tag(spool), ignore_errors=True)


def build_entries(spool: Path) -> list[Path]:
    return sorted(p for p in (spool / "builds" / "done").iterdir() if not p.name.startswith("."))


def build_record(spool: Path, key: str) -> dict[str, Any]:
    return json.loads((spool / "builds" / "done" / key / "result.json").read_text())


def claims(entry: Path) -> list[dict[str, Any]]:
    lines = (entry / "attempts.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def cli(spool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "--spool", str(spool), *args], capture_output=True, text=True)
