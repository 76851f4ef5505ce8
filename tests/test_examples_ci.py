"""examples/ci/drop-and-wait.sh as a cron job or a CI pipeline runs it, against a real spool and a
real executor: the exit status it acts on and the output it shows, through the CLI and through the
plain spool protocol (a host that only mounts the spool)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, make_submission

SCRIPT = ROOT / "examples" / "ci" / "drop-and-wait.sh"
JOB = ROOT / "examples" / "ci" / "job"


def drop_and_wait(
    spool: Path, directory: Path, timeout: int, *, plain: bool, **env: str
) -> subprocess.CompletedProcess[str]:
    path = os.environ["PATH"]
    if plain:  # no cutor-spool on PATH at all: the script must speak the protocol itself
        path = ":".join(p for p in path.split(":") if not (Path(p) / "cutor-spool").exists())
    else:
        path = f"{Path(sys.executable).parent}:{path}"
    environ = {**os.environ, "PATH": path, **env}
    if plain:
        environ["CUTOR_SPOOL_PLAIN"] = "1"
    return subprocess.run(
        ["sh", str(SCRIPT), str(spool), str(directory), str(timeout)],
        capture_output=True,
        text=True,
        env=environ,
        timeout=timeout + 60,
    )


@pytest.mark.parametrize("plain", [False, True], ids=["cli", "plain-protocol"])
def test_exit_status_and_output_follow_the_result(spool: Path, tmp_path: Path, executors: Any, plain: bool) -> None:
    executors(spool, "--concurrency", "2")
    ok = drop_and_wait(spool, JOB, 120, plain=plain, CUTOR_SPOOL_ID="nightly-1")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("nightly-1: done (ok)")
    assert "fib(30) = 832040" in ok.stdout
    assert (spool / "done" / "nightly-1" / "result" / "run.json").is_file()

    failing = make_submission(tmp_path, "failing", {"run": "echo checking; echo 'broken build' >&2; exit 4"})
    proc = drop_and_wait(spool, failing, 120, plain=plain)
    assert proc.returncode == 1
    assert "runtime_error" in proc.stdout and "broken build" in proc.stdout

    invalid = make_submission(tmp_path, "invalid", {"run": "true", "limits": {"run": {"cpu_time": "lots"}}})
    proc = drop_and_wait(spool, invalid, 120, plain=plain)
    assert proc.returncode == 3
    assert "cpu_time" in proc.stdout + proc.stderr


@pytest.mark.parametrize("plain", [False, True], ids=["cli", "plain-protocol"])
def test_no_worker_means_timeout_and_the_job_stays_queued(spool: Path, plain: bool) -> None:
    proc = drop_and_wait(spool, JOB, 2, plain=plain, CUTOR_SPOOL_ID="waits")
    assert proc.returncode == 5
    assert (spool / "incoming" / "waits").is_dir()


def test_usage_errors(tmp_path: Path, spool: Path) -> None:
    assert subprocess.run(["sh", str(SCRIPT), str(spool)], capture_output=True).returncode == 2
    assert subprocess.run(["sh", str(SCRIPT), str(tmp_path), str(JOB)], capture_output=True).returncode == 2
    not_a_job = tmp_path / "empty"
    not_a_job.mkdir()
    assert subprocess.run(["sh", str(SCRIPT), str(spool), str(not_a_job)], capture_output=True).returncode == 2
