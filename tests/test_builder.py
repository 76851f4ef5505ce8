"""The builder and the executor's dependencies stage, end to end: a real spool, real `cutor-spool
builder` and `executor` processes, real Nix (offline, substituters off, Nix's sandbox on) with the
stand-in channel of tests/nixchannel, real bubblewrap."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, drop, make_submission, result, stage, wait_done
from nixtest import (
    CHANNEL,
    build_entries,
    build_record,
    builders,
    claims,
    need_nix,
    nix_config,
    spool_roots,
    unique,
    wait_for,
)

__all__ = ["builders", "spool_roots"]  # fixtures, imported for pytest

pytestmark = pytest.mark.nix

ROMAN = {
    "dependencies": ["python3", "python3Packages.roman"],
    "run": "python3 -c 'import roman, sys; print(roman.toRoman(int(sys.stdin.read())))'",
    "stdin": "1987\n",
}


@pytest.fixture(autouse=True)
def _nix(spool_roots: None) -> None:
    need_nix()


def test_environment_is_built_once_and_reused(spool: Path, tmp_path: Path, executors: Any, builders: Any) -> None:
    nix_config(spool)
    builders(spool)
    executors(spool)
    drop(spool, make_submission(tmp_path, "a", ROMAN), "first")
    wait_done(spool, "first", timeout=120)
    drop(spool, make_submission(tmp_path, "b", ROMAN), "second")
    wait_done(spool, "second", timeout=60)

    for entry_id in ("first", "second"):
        assert result(spool, entry_id)["outcome"] == "ok", result(spool, entry_id)
        assert stage(spool, entry_id, "run")["stdout"] == "MCMLXXXVII\n"
    first, second = stage(spool, "first", "dependencies"), stage(spool, "second", "dependencies")
    assert first["status"] == "ok" and second["status"] == "ok"
    assert first["key"] == second["key"]
    assert first["source"] == "requested" and second["source"] == "cached"
    assert [p["attr"] for p in first["packages"]] == ["python3", "python3Packages.roman"]
    assert first["environment"]["path"].startswith("/nix/store/")

    (entry,) = build_entries(spool)
    assert entry.name == first["key"]
    assert [c["event"] for c in claims(entry)] == ["claimed"]  # one build, for both
    record = build_record(spool, entry.name)
    assert record["status"] == "ok" and record["exported"] is True
    assert sorted((entry / "uses").iterdir()) == [entry / "uses" / "first", entry / "uses" / "second"]
    env_script = (entry / "env.sh").read_text()
    assert "PYTHONPATH" in env_script and "python3-roman" in env_script
    assert "mktemp" not in env_script  # no process spent on a temporary directory per stage


@pytest.mark.slow  # ~6 s
def test_twenty_submissions_one_new_environment_one_build(
    spool: Path, tmp_path: Path, executors: Any, builders: Any
) -> None:
    # Twenty stages starting at once on two loaded cores can hold an executor's heartbeat past
    # the fast 1.5 s lease of the other tests: this test is about builds, not about leases.
    nix_config(spool, top={"heartbeat": "1s", "lease_timeout": "15s"})
    # A slow package keeps the build running while every submission asks for it.
    nix_file = f"""{{ pkgs }}: pkgs.mkShell {{
      packages = [ pkgs.python3 (pkgs.runCommand "slow-{unique()}" {{ }} "sleep 2; mkdir -p $out/bin") ];
    }}"""
    builders(spool)
    builders(spool)
    executors(spool, "--concurrency", "10")
    executors(spool, "--concurrency", "10")
    ids = [f"many-{i:02d}" for i in range(20)]
    for entry_id in ids:
        sub = make_submission(
            tmp_path,
            entry_id,
            {"dependencies": {"nix": "cutor.nix"}, "run": "python3 -c 'print(6 * 7)'"},
            {"cutor.nix": nix_file},
        )
        drop(spool, sub, entry_id)
    wait_done(spool, ids, timeout=240)

    keys = set()
    for entry_id in ids:
        assert result(spool, entry_id)["outcome"] == "ok", result(spool, entry_id)
        assert result(spool, entry_id)["attempts"] == 1
        assert stage(spool, entry_id, "run")["stdout"] == "42\n"
        keys.add(stage(spool, entry_id, "dependencies")["key"])
    (key,) = keys
    entries = build_entries(spool)
    assert [e.name for e in entries] == [key]  # no duplicate or rejected build entries either
    assert [c["event"] for c in claims(entries[0])] == ["claimed"]
    assert len(list((entries[0] / "uses").iterdir())) == 20


@pytest.mark.slow  # ~13 s: waits out a lease
def test_two_builders_one_killed_mid_build_still_finish_it(
    spool: Path, tmp_path: Path, executors: Any, builders: Any
) -> None:
    nix_config(spool)
    marker = unique()
    nix_file = f"""{{ pkgs }}: pkgs.mkShell {{
      packages = [ pkgs.python3 (pkgs.runCommand "slow-{marker}" {{ }} "sleep 6; mkdir -p $out/bin") ];
    }}"""
    first = builders(spool)
    executors(spool)
    sub = make_submission(
        tmp_path, "s", {"dependencies": {"nix": "cutor.nix"}, "run": "echo survived"}, {"cutor.nix": nix_file}
    )
    drop(spool, sub, "killed-builder")
    active = spool / "builds" / "active"
    wait_for(lambda: any(active.iterdir()), 60, "the first builder to claim the build")
    time.sleep(2)  # into the 6 s build; the attempt log below shows that it did not finish
    first.signal(signal.SIGKILL)
    first.stop()
    builders(spool)  # the second builder reaps the expired lease and builds it again
    wait_done(spool, "killed-builder", timeout=120)

    assert result(spool, "killed-builder")["outcome"] == "ok"
    assert stage(spool, "killed-builder", "run")["stdout"] == "survived\n"
    (entry,) = build_entries(spool)
    events = [c["event"] for c in claims(entry)]
    assert events == ["claimed", "expired", "claimed"], events
    assert claims(entry)[1]["worker_died"] is True  # a lost lease, not an attempt (watcher/lost.py)
    assert build_record(spool, entry.name)["attempt"] == 2


def test_failed_build_is_a_dependency_failure_with_nix_error(
    spool: Path, tmp_path: Path, executors: Any, builders: Any
) -> None:
    nix_config(spool)
    nix_file = """{ pkgs }: pkgs.mkShell {
      packages = [ (pkgs.runCommand "broken" { } "echo cutor-boom-in-the-build >&2; exit 3") ];
    }"""
    builders(spool)
    executors(spool)
    sub = make_submission(
        tmp_path, "s", {"dependencies": {"nix": "cutor.nix"}, "run": "echo never"}, {"cutor.nix": nix_file}
    )
    drop(spool, sub, "broken-build")
    wait_done(spool, "broken-build", timeout=120)

    status = result(spool, "broken-build")
    assert status["state"] == "done" and status["outcome"] == "dependency_failure"
    assert "run" not in status["stages"]
    assert status["stages"]["dependencies"]["status"] == "runtime_error"  # listed as every stage is
    deps = stage(spool, "broken-build", "dependencies")
    assert deps["status"] == "runtime_error" and deps["build"]["status"] == "failed"
    assert "cutor-boom-in-the-build" in deps["stderr"]
    assert "failed with exit code 3" in deps["stderr"]
    assert not (spool / "done" / "broken-build" / "result" / "run.json").exists()


def test_missing_attribute_is_a_dependency_failure(spool: Path, tmp_path: Path, executors: Any, builders: Any) -> None:
    nix_config(spool)
    builders(spool)
    executors(spool)
    drop(spool, make_submission(tmp_path, "s", {"dependencies": ["python3", "nosuchpackage"], "run": "true"}), "nope")
    wait_done(spool, "nope", timeout=120)
    assert result(spool, "nope")["outcome"] == "dependency_failure"
    assert "nixpkgs has no attribute 'nosuchpackage'" in stage(spool, "nope", "dependencies")["stderr"]


@pytest.mark.parametrize(
    "name",
    [
        'python3; builtins.readFile "/etc/shadow"',
        "${builtins.readFile /etc/shadow}",
        "python3 ++ [ (import /etc/passwd) ]",
        "../../etc/shadow",
        "pkgs.python3 or (abort 1)",
    ],
)
def test_attribute_names_that_are_code_are_refused(spool: Path, tmp_path: Path, executors: Any, name: str) -> None:
    nix_config(spool)
    executors(spool)
    drop(spool, make_submission(tmp_path, "s", {"dependencies": [name], "run": "true"}), "code-attr")
    wait_done(spool, "code-attr", timeout=60)
    status = result(spool, "code-attr")
    assert status["state"] == "invalid"
    assert any(e["where"].startswith("dependencies") for e in status["errors"]), status["errors"]
    assert all(not list((spool / "builds" / d).iterdir()) for d in ("incoming", "active", "done"))  # never sent


def _shadow_lines() -> list[str]:
    return [line for line in Path("/etc/shadow").read_text().splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("nix_file", "expect"),
    [
        (
            "{ pkgs }: pkgs.mkShell { secret = builtins.readFile /etc/shadow; }",
            "access to absolute path '/etc/shadow' is forbidden in restricted mode",
        ),
        (
            '{ pkgs }: pkgs.mkShell { secret = builtins.readFile "/etc/shadow"; }',
            "access to absolute path '/etc/shadow' is forbidden in restricted mode",
        ),
        (
            "{ pkgs }: import /etc/passwd",
            "access to absolute path '/etc/passwd' is forbidden in restricted mode",
        ),
        (
            '{ pkgs }: pkgs.mkShell { s = builtins.fetchurl "http://127.0.0.1:9/secret"; }',
            "is forbidden in restricted mode",
        ),
        (  # read at build time instead: Nix's sandbox has no /etc/shadow
            '{ pkgs }: pkgs.mkShell { packages = [ (pkgs.runCommand "peek" { } "cat /etc/shadow > $out") ]; }',
            "/etc/shadow: No such file or directory",
        ),
    ],
)
def test_nix_file_that_reads_host_files_is_refused(
    spool: Path, tmp_path: Path, executors: Any, builders: Any, nix_file: str, expect: str
) -> None:
    nix_config(spool)
    builders(spool)
    executors(spool)
    sub = make_submission(
        tmp_path, "s", {"dependencies": {"nix": "cutor.nix"}, "run": "echo never"}, {"cutor.nix": nix_file}
    )
    drop(spool, sub, "peek")
    wait_done(spool, "peek", timeout=120)
    assert result(spool, "peek")["outcome"] == "dependency_failure"
    deps = stage(spool, "peek", "dependencies")
    assert expect in deps["stderr"], deps["stderr"]
    everything = "\n".join(p.read_text(errors="replace") for p in spool.rglob("*") if p.is_file())
    for line in _shadow_lines():
        assert line not in everything


def test_sandbox_mounts_only_the_environment_closure(
    spool: Path, tmp_path: Path, executors: Any, builders: Any
) -> None:
    nix_config(spool)
    builders(spool)
    executors(spool)
    sub = make_submission(
        tmp_path,
        "s",
        {
            "dependencies": ["gcc", "gnumake"],
            "compile": "printf 'all:\\n\\tgcc -o hi hi.c\\n' > Makefile && make -s",
            "run": "./hi; ls /nix/store; command -v gcc; command -v make; touch /nix/store/x 2>&1 || true",
        },
        {"hi.c": '#include <stdio.h>\nint main(void) { puts("hi from nix gcc"); return 0; }\n'},
    )
    drop(spool, sub, "closure")
    wait_done(spool, "closure", timeout=120)
    assert result(spool, "closure")["outcome"] == "ok", result(spool, "closure")
    deps = stage(spool, "closure", "dependencies")
    record = build_record(spool, deps["key"])
    lines = stage(spool, "closure", "run")["stdout"].splitlines()
    assert lines[0] == "hi from nix gcc"
    closure = sorted(Path(p).name for p, _ in record["paths"])
    listed = lines[1 : 1 + len(closure)]
    assert listed == closure  # /nix/store shows the closure and nothing else
    gcc_path, make_path = lines[1 + len(closure)], lines[2 + len(closure)]
    assert gcc_path.startswith("/nix/store/") and "-gcc-" in gcc_path
    assert make_path.startswith("/nix/store/") and "-gnumake-" in make_path
    assert "Read-only file system" in lines[-1]


def test_packages_lists_what_is_cached_and_who_used_it(
    spool: Path, tmp_path: Path, executors: Any, builders: Any
) -> None:
    from nixtest import cli

    nix_config(spool)
    builders(spool)
    executors(spool)
    for entry_id in ("p1", "p2"):
        drop(spool, make_submission(tmp_path, entry_id, ROMAN), entry_id)
        wait_done(spool, entry_id, timeout=120)
    drop(spool, make_submission(tmp_path, "p3", {"dependencies": ["hello"], "run": "hello"}), "p3")
    wait_done(spool, "p3", timeout=120)
    assert stage(spool, "p3", "run")["stdout"] == "Hello, world!\n"

    done = cli(spool, "packages", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    envs = {tuple(e["request"]["attrs"]): e for e in data["environments"]}
    assert envs[("python3", "python3Packages.roman")]["uses"] == 2
    assert envs[("hello",)]["uses"] == 1
    assert all(e["closure_size"] > 0 and e["last_used"] for e in envs.values())
    pkgs = {p["name"]: p for p in data["packages"]}
    assert pkgs["roman"]["version"] == "4.2-standin" and pkgs["roman"]["uses"] == 2
    assert re.fullmatch(r"/nix/store/[0-9a-z]{32}-python3-roman-4.2-standin", pkgs["roman"]["path"])
    assert pkgs["roman"]["size"] > 0
    assert pkgs["hello"]["uses"] == 1 and pkgs["python3"]["environments"] == 1
    human = cli(spool, "packages")
    assert human.returncode == 0 and "roman 4.2-standin" in human.stdout and "2 use(s)" in human.stdout


def test_environment_is_entered_quickly_when_warm(spool: Path, tmp_path: Path, executors: Any, builders: Any) -> None:
    """Not a timing assertion: a warm submission must not ask for a build or wait for one."""
    nix_config(spool)
    builders(spool)
    executors(spool)
    drop(spool, make_submission(tmp_path, "w1", ROMAN), "w1")
    wait_done(spool, "w1", timeout=120)
    time.sleep(0.5)
    drop(spool, make_submission(tmp_path, "w2", ROMAN), "w2")
    wait_done(spool, "w2", timeout=60)
    deps = stage(spool, "w2", "dependencies")
    assert deps["source"] == "cached" and deps["environment"]["substituted"] is False
    (entry,) = build_entries(spool)
    assert [c["event"] for c in claims(entry)] == ["claimed"]


def test_flake_pinned_nixpkgs(spool: Path, tmp_path: Path, executors: Any, builders: Any) -> None:
    nix_config(spool, nixpkgs=f"path:{CHANNEL}")
    builders(spool)
    executors(spool)
    drop(spool, make_submission(tmp_path, "f", ROMAN), "flake")
    wait_done(spool, "flake", timeout=120)
    assert result(spool, "flake")["outcome"] == "ok", result(spool, "flake")
    assert stage(spool, "flake", "run")["stdout"] == "MCMLXXXVII\n"
    deps = stage(spool, "flake", "dependencies")
    assert deps["nixpkgs"].startswith(f"path:{CHANNEL}?") and "narHash=sha256-" in deps["nixpkgs"]


def test_python_dep_example_runs_as_shipped(spool: Path, executors: Any, builders: Any) -> None:
    nix_config(spool)
    builders(spool)
    executors(spool)
    drop(spool, ROOT / "examples" / "python-dep", "example")
    wait_done(spool, "example", timeout=120)
    assert result(spool, "example")["outcome"] == "ok", result(spool, "example")
    assert stage(spool, "example", "run")["stdout"] == "1999 = MCMXCIX\n2024 = MMXXIV\n3888 = MMMDCCCLXXXVIII\n"
