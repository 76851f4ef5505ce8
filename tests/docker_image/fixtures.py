"""The Docker engine and the test image, for any test module that needs them.

`docker_image` (session scope) starts dockerd through scripts/dockerd.sh and builds
`cutor-spool-sandbox:test` with build.sh (a no-op when it is up to date). A missing engine skips
the test locally and fails it in CI, through conftest's `need()`.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from conftest import ROOT, need

IMAGE = "cutor-spool-sandbox:test"


def start_engine() -> str | None:
    """None when the engine answers (started by scripts/dockerd.sh if need be), else why not."""
    if shutil.which("docker") is None or shutil.which("dockerd") is None:
        return "docker.io is not installed"
    started = subprocess.run(["bash", str(ROOT / "scripts" / "dockerd.sh")], capture_output=True, text=True)
    if started.returncode != 0:
        return f"dockerd did not start: {started.stderr.strip()[-500:]}"
    return None


def start_engine_and_build() -> str | None:
    """None when ready, else why not."""
    problem = start_engine()
    if problem is not None:
        return problem
    built = subprocess.run(
        ["bash", str(ROOT / "tests" / "docker_image" / "build.sh"), IMAGE], capture_output=True, text=True
    )
    if built.returncode != 0:
        return f"tests/docker_image/build.sh failed: {built.stderr.strip()[-1000:]}"
    return None


@pytest.fixture(scope="session")
def docker_image() -> str:
    problem = start_engine_and_build()
    need(problem is None, problem or "")
    return IMAGE
