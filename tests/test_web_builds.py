"""The page's environments: a real builder builds a Nix environment (offline, the stand-in channel of
tests/nixchannel), real executors use it, and the page shows it with its packages and its uses,
updated when it is used again (the index notices new `uses/` markers, not only new entries)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, drop, make_submission, result, wait_done
from nixtest import builders, need_nix, nix_config

__all__ = ["builders"]  # the fixture, imported for pytest

pytestmark = pytest.mark.nix

ROMAN = {
    "dependencies": ["python3", "python3Packages.roman"],
    "run": "python3 -c 'import roman; print(roman.toRoman(2024))'",
}


def regenerate(spool: Path) -> dict[str, Any]:
    subprocess.run([*CLI, "--spool", str(spool), "status-page"], check=True, capture_output=True)
    status: dict[str, Any] = json.loads((spool / "status" / "status.json").read_text())
    return status


def test_environments_show_packages_and_uses(spool: Path, tmp_path: Path, executors: Any, builders: Any) -> None:
    need_nix()
    nix_config(spool)
    builders(spool)
    executors(spool)
    drop(spool, make_submission(tmp_path, "a", ROMAN), "roman-1")
    wait_done(spool, "roman-1", timeout=180)
    assert result(spool, "roman-1")["outcome"] == "ok"

    status = regenerate(spool)
    (env,) = status["builds"]["environments"]
    assert env["status"] == "ok"
    assert "roman" in env["packages"] and "python3" in env["packages"]
    assert env["uses"] == 1 and env["last_used"] is not None
    assert status["builds"]["done"] == 1
    workers = {w["kind"] for w in status["workers"] if w["alive"]}
    assert workers == {"builder", "executor"}
    html = (spool / "status" / "index.html").read_text()
    assert f'data-key="{env["name"]}"' in html
    packages = {p["name"]: p for p in status["builds"]["packages"]}
    assert packages["roman"]["environments"] == 1 and packages["roman"]["uses"] == 1
    assert packages["roman"]["path"].startswith("/nix/store/")
    assert 'data-package="roman"' in html

    drop(spool, make_submission(tmp_path, "b", ROMAN), "roman-2")
    wait_done(spool, "roman-2", timeout=120)
    status = regenerate(spool)
    (env,) = status["builds"]["environments"]
    assert env["uses"] == 2
    assert {p["name"]: p["uses"] for p in status["builds"]["packages"]}["roman"] == 2
