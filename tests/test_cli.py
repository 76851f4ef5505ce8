"""The client commands as a user or a CI pipeline runs them: exit codes, JSON, progress."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from conftest import CLI, make_submission


def cli(spool: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "--spool", str(spool), *args], capture_output=True, text=True, timeout=timeout)


def test_submit_wait_exit_codes_follow_the_outcome(spool: Path, tmp_path: Path, executors: Any) -> None:
    executors(spool, "--concurrency", "2")
    ok = make_submission(tmp_path, "ok", {"run": "echo hello; echo warn >&2"})
    proc = cli(spool, "submit", str(ok), "--wait", "--json")
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert (status["state"], status["outcome"]) == ("done", "ok")
    run = json.loads((spool / "done" / status["id"] / "result" / "run.json").read_text())
    assert (run["stdout"], run["stderr"]) == ("hello\n", "warn\n")

    failing = make_submission(tmp_path, "fails", {"run": "exit 7"})
    proc = cli(spool, "submit", str(failing), "--id", "fails", "--wait")
    assert proc.returncode == 1
    assert "runtime_error" in proc.stdout

    broken = make_submission(tmp_path, "broken", {"compile": "cc -o x missing.c", "run": "./x"})
    proc = cli(spool, "submit", str(broken), "--id", "broken", "--wait", "--json")
    assert proc.returncode == 1 and json.loads(proc.stdout)["outcome"] == "compile_error"

    invalid = make_submission(tmp_path, "invalid", "run: echo hi\nbogus: 1\n")
    proc = cli(spool, "submit", str(invalid))  # refused locally, nothing dropped
    assert proc.returncode == 3 and "bogus" in proc.stderr
    assert not any((spool / "incoming").iterdir())
    proc = cli(spool, "submit", str(invalid), "--no-check", "--id", "invalid", "--wait", "--json")
    assert proc.returncode == 3
    assert json.loads(proc.stdout)["errors"][0]["where"] == "bogus"


def test_status_wait_list_and_ids(spool: Path, tmp_path: Path, executors: Any) -> None:
    job = make_submission(tmp_path, "job", {"run": "echo listed"})
    proc = cli(spool, "submit", str(job), "--id", "job-1")
    assert proc.returncode == 0 and proc.stdout.strip() == "job-1"
    queued = json.loads(cli(spool, "status", "job-1", "--json").stdout)
    assert queued["state"] == "queued"
    assert json.loads(cli(spool, "list", "--json").stdout)["queued"] == [{"id": "job-1", "state": "queued"}]
    executors(spool)
    assert cli(spool, "wait", "job-1", "--timeout", "60").returncode == 0
    assert json.loads(cli(spool, "status", "job-1", "--json").stdout)["outcome"] == "ok"
    listing = json.loads(cli(spool, "list", "--json").stdout)
    assert listing["done"][0]["id"] == "job-1" and listing["queued"] == [] and listing["active"] == []
    again = cli(spool, "submit", str(job), "--id", "job-1")
    assert again.returncode != 0 and "already" in again.stderr
    assert cli(spool, "status", "no-such-id").returncode == 6
    assert cli(spool, "submit", str(job), "--id", "bad.id").returncode != 0


def test_wait_times_out_with_its_own_exit_code(spool: Path, tmp_path: Path) -> None:
    job = make_submission(tmp_path, "job", {"run": "echo never run"})
    assert cli(spool, "submit", str(job), "--id", "lonely").returncode == 0
    assert cli(spool, "wait", "lonely", "--timeout", "0.5").returncode == 5


def test_schema_and_init(tmp_path: Path) -> None:
    schema = json.loads(subprocess.run([*CLI, "schema"], capture_output=True, text=True, check=True).stdout)
    assert schema["additionalProperties"] is False
    assert {"run", "compile", "dependencies", "limits", "tests", "files"} <= set(schema["properties"])
    spool_schema = json.loads(
        subprocess.run([*CLI, "schema", "--spool-config"], capture_output=True, text=True, check=True).stdout
    )
    assert "lease_timeout" in spool_schema["properties"]
    target = tmp_path / "new-spool"
    subprocess.run([*CLI, "init", str(target)], check=True, capture_output=True)
    for sub in ("tmp", "incoming", "active", "done", "builds/incoming", "builds/done", "workers", "status"):
        assert (target / sub).is_dir()
    assert "lease_timeout" in (target / "spool.yaml").read_text()


def test_spool_option_after_the_command_wins(spool: Path, tmp_path: Path) -> None:
    job = make_submission(tmp_path, "job", {"run": "echo queued"})
    elsewhere = tmp_path / "elsewhere"
    assert cli(elsewhere, "submit", str(job), "--id", "here", "--spool", str(spool)).returncode == 0
    assert (spool / "incoming" / "here").is_dir() and not (elsewhere / "incoming" / "here").exists()
    listing = subprocess.run([*CLI, "list", "--spool", str(spool)], capture_output=True, text=True, check=True)
    assert "queued: 1" in listing.stdout


def test_executor_refuses_a_state_directory_the_sandbox_uids_cannot_reach(spool: Path, tmp_path: Path) -> None:
    """Found by the flake test: bubblewrap runs as the slot's uid, so a state directory under a
    0700 directory (pytest's own temporary directory, a root home) made every stage's setup fail
    and burned each submission's attempts to `error`. The executor must refuse at start instead,
    saying why, and leave the queue untouched."""
    job = make_submission(tmp_path, "job", {"run": "echo hi"})
    assert cli(spool, "submit", str(job), "--id", "waiting").returncode == 0
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    proc = cli(spool, "executor", "--state-dir", str(private / "state"), timeout=60)
    assert proc.returncode != 0
    assert f"{private} has mode 0700 and others may not traverse it" in proc.stderr, proc.stderr
    assert [p.name for p in (spool / "incoming").iterdir()] == ["waiting"]
    assert not any((spool / "active").iterdir()) and not any((spool / "done").iterdir())


def test_workers_refuse_a_directory_that_is_not_a_spool(tmp_path: Path) -> None:
    """A typo, or an NFS share not mounted yet: the worker says so and exits 78 (which the systemd
    units do not restart) instead of making an empty spool and waiting on it forever."""
    for command in ("executor", "builder"):
        missing = tmp_path / f"no-spool-{command}"
        proc = cli(missing, command, timeout=60)
        assert proc.returncode == 78, proc.stderr
        assert "is not an initialised spool" in proc.stderr and "init" in proc.stderr
        assert not missing.exists()
    empty = tmp_path / "unmounted"
    empty.mkdir()
    assert cli(empty, "executor", timeout=60).returncode == 78 and not any(empty.iterdir())


def test_dependencies_without_nix_configured_are_the_systems_error_naming_the_fix(
    spool: Path, tmp_path: Path, executors: Any
) -> None:
    """Not `invalid` (the user did nothing wrong): retried, then `error` with what to set."""
    executors(spool)
    job = make_submission(tmp_path, "deps", {"dependencies": ["hello"], "run": "hello"})
    proc = cli(spool, "submit", str(job), "--id", "deps", "--wait", "--json", "--timeout", "90")
    status = json.loads(proc.stdout)
    assert proc.returncode == 4 and status["state"] == "error", proc.stdout
    assert "nix.nixpkgs" in status["reason"] and status["attempts"] == 3


def test_every_option_of_every_command_has_help_text() -> None:
    import click

    from cutor_spool.cli import cli as root

    def commands(group: click.Group, path: str) -> list[tuple[str, click.Command]]:
        found: list[tuple[str, click.Command]] = []
        for name, command in group.commands.items():
            if isinstance(command, click.Group):
                found += commands(command, f"{path} {name}")
            elif not command.hidden:
                found.append((f"{path} {name}", command))
        return found

    bare = [
        f"{path} {param.opts[0]}"
        for path, command in commands(root, "cutor-spool")
        for param in command.params
        if isinstance(param, click.Option) and not param.hidden and not param.help
    ]
    assert bare == []


def test_a_changed_spool_yaml_is_reported_until_the_workers_restart(
    spool: Path, tmp_path: Path, executors: Any
) -> None:
    executor = executors(spool)
    job = make_submission(tmp_path, "job", {"run": "echo hi"})
    assert cli(spool, "submit", str(job), "--id", "before", "--wait").returncode == 0
    assert "warning" not in cli(spool, "status", "before").stderr
    with open(spool / "spool.yaml", "a") as fh:
        fh.write("# a change\n")
    warned = cli(spool, "status", "before")
    assert "read spool.yaml before its last change" in warned.stderr and warned.returncode == 0
    assert "read spool.yaml before its last change" in cli(spool, "list").stderr
    executor.stop()
    executors(spool)
    assert cli(spool, "submit", str(job), "--id", "after", "--wait").returncode == 0
    assert "warning" not in cli(spool, "status", "after").stderr
