"""A build's own limits (spool.yaml's nix.build_timeout, build_memory, build_log), and the builder's
side of the protocol: tampered requests, a builder with other nixpkgs, no builder at all.
Real Nix, real builder and executor processes, the stand-in channel."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import drop, make_submission, result, stage, wait_done
from nixtest import CHANNEL, build_entries, builders, need_nix, nix_config, spool_roots, unique, wait_for

from cutor_spool.builder.keys import NixpkgsPin, for_attrs
from cutor_spool.builder.requests import Builds
from cutor_spool.layout import SpoolPaths

__all__ = ["builders", "spool_roots"]

pytestmark = pytest.mark.nix


@pytest.fixture(autouse=True)
def _nix(spool_roots: None) -> None:
    need_nix()


def _nix_file(command: str) -> str:
    return f'{{ pkgs }}: pkgs.mkShell {{ packages = [ (pkgs.runCommand "limit-{unique()}" {{ }} "{command}") ]; }}'


@pytest.mark.parametrize(
    ("nix", "command", "status", "message"),
    [
        ({"build_timeout": "3s"}, "sleep 60; mkdir $out", "time_limit", "nix.build_timeout"),
        (
            {"build_memory": "160MiB"},
            "/usr/bin/python3 -c 'x = bytearray(600 << 20); x[::4096] = bytes(len(x[::4096]))'; mkdir $out",
            "memory_limit",
            "nix.build_memory",
        ),
        ({"build_log": "64KiB"}, "yes cutor-log-flood | head -c 2000000 >&2; mkdir $out", "output_limit", "build_log"),
    ],
    ids=["time", "memory", "log"],
)
def test_build_limits(
    spool: Path,
    tmp_path: Path,
    executors: Any,
    builders: Any,
    nix: dict[str, str],
    command: str,
    status: str,
    message: str,
) -> None:
    nix_config(spool, **nix)
    builders(spool)
    executors(spool)
    sub = make_submission(
        tmp_path, "s", {"dependencies": {"nix": "cutor.nix"}, "run": "echo never"}, {"cutor.nix": _nix_file(command)}
    )
    drop(spool, sub, "limited")
    wait_done(spool, "limited", timeout=120)
    assert result(spool, "limited")["outcome"] == "dependency_failure"
    deps = stage(spool, "limited", "dependencies")
    assert deps["status"] == status, deps["message"]
    assert message in deps["message"]
    if status == "output_limit":
        assert len((spool / "builds" / "done" / deps["key"] / "build.log").read_bytes()) <= 64 * 1024


def test_tampered_request_is_set_aside_not_published(spool: Path, tmp_path: Path, builders: Any) -> None:
    """A request dropped under the name of another key must not publish anything under that key."""
    nix_config(spool)
    paths = SpoolPaths(spool)
    pin = NixpkgsPin(kind="path", ref=str(CHANNEL), identity="sha256-irrelevant")
    honest = for_attrs(["python3"], pin, "x86_64-linux")
    other = for_attrs(["gcc"], pin, "x86_64-linux")
    staging = tmp_path / "forged"
    staging.mkdir()
    (staging / "request.json").write_text(json.dumps(other.model_dump(mode="json")))
    (staging / ".ready").write_text("")
    shutil.move(staging, paths.builds.incoming / honest.key())
    builders(spool)
    done = paths.builds.done
    wait_for(lambda: any(done.iterdir()), 60, "the builder to handle the forged request")
    (entry,) = list(done.iterdir())
    assert entry.name.startswith(f"{honest.key()}.rejected-")
    assert "not to its name" in json.loads((entry / "result.json").read_text())["message"]
    assert not (done / honest.key()).exists()


def test_request_for_other_nixpkgs_is_an_error_not_a_build(spool: Path, tmp_path: Path, builders: Any) -> None:
    nix_config(spool)
    paths = SpoolPaths(spool)
    request = for_attrs(["python3"], NixpkgsPin(kind="path", ref=str(CHANNEL), identity="sha256-other"), "x86_64-linux")
    assert Builds(paths).send(request, None)
    builders(spool)
    wait_done_build = paths.builds.done / request.key() / "result.json"
    wait_for(wait_done_build.exists, 60, "the builder to answer")
    record = json.loads(wait_done_build.read_text())
    assert record["status"] == "error"
    assert "sha256-other" in record["message"] and record["paths"] == []


def test_no_builder_running_is_a_system_failure(spool: Path, tmp_path: Path, executors: Any) -> None:
    nix_config(spool)
    config = (spool / "spool.yaml").read_text()
    (spool / "spool.yaml").write_text(config + "limits:\n  stages:\n    dependencies: {wall_time: 2s}\n")
    executors(spool)
    drop(spool, make_submission(tmp_path, "s", {"dependencies": ["python3"], "run": "true"}), "lonely")

    def failures() -> list[str]:
        found = []
        for events in spool.glob("*/lonely*/result/events.jsonl"):
            found += [
                json.loads(line).get("reason", "")
                for line in events.read_text().splitlines()
                if '"system_failure"' in line
            ]
        return found

    wait_for(lambda: bool(failures()), 60, "the executor to give up waiting")
    assert "is `cutor-spool builder` running?" in failures()[0]
    assert [e.name for e in (spool / "builds" / "incoming").iterdir()]  # the request waits for a builder
    assert build_entries(spool) == []
    assert not list(spool.glob("*/lonely*/result/run.json"))
