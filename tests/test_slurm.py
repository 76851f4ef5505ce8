"""`cutor-spool slurm` on a real single-node Slurm (tests/slurm.py): the array of pilot executors
it submits runs every submission right and ends when the queue is empty; a pilot cancelled with
`scancel` in the middle of a stage loses nothing."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, drop, make_submission, result, stage, wait_done, wait_until
from slurm import PARTITION, Slurm, slurm  # noqa: F401 - the session's cluster, a fixture
from test_reliability import active_claim, attempts_log

# The cluster's tests are slow: a cluster (~3 s) and pilots that wait out their idleness.


def submit_pilots(cluster: Slurm, spool: Path, logs: Path, *options: str) -> str:
    """`cutor-spool slurm --submit`: the job id it prints."""
    argv = [
        *CLI,
        "--spool",
        str(spool),
        "slurm",
        "--submit",
        "--partition",
        PARTITION,
        "--bin",
        shlex.join([sys.executable, "-m", "cutor_spool"]),
        "--output",
        str(logs / "pilot-%A_%a.out"),
        *options,
    ]
    done = subprocess.run(argv, env=cluster.env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def job_over(cluster: Slurm, job_id: str) -> dict[str, tuple[str, str]] | None:
    """Each task's (state, exit code) once none is pending or running."""
    if any(task.split("_")[0] == job_id for task in cluster.squeue()):
        return None
    return cluster.job_states(job_id)


def test_the_script_is_valid_bash_and_its_executor_line_what_the_cli_accepts(spool: Path) -> None:
    from cutor_spool.cli import cli as root

    options = ["--pilots", "3", "--exclusive", "--time", "1:00:00", "--max-jobs", "50", "--exit-when-idle", "90s"]
    text = subprocess.run(
        [*CLI, "--spool", str(spool), "slurm", *options], capture_output=True, text=True, check=True
    ).stdout
    assert "#SBATCH --array=0-2" in text and "#SBATCH --exclusive" in text and "#SBATCH --signal=B:TERM@120" in text
    assert subprocess.run(["bash", "-n"], input=text, text=True, check=False).returncode == 0
    (line,) = [line for line in text.splitlines() if line.startswith("exec ")]
    words = shlex.split(line)
    assert words[words.index("--spool") + 1] == str(spool)
    command = words.index("executor")  # no option drift: the executor takes every one of them
    parsed = root.commands["executor"].make_context("executor", words[command + 1 :]).params
    assert (parsed["exit_when_idle"], parsed["max_jobs"], parsed["grace"]) == (90.0, 50, 110.0)
    refused = subprocess.run(
        [*CLI, "--spool", str(spool), "slurm", "--exclusive", "--cpus-per-task", "2"], capture_output=True, text=True
    )
    assert refused.returncode == 2 and "exclude each other" in refused.stderr


@pytest.mark.slow  # ~20 s
def test_two_pilots_run_200_submissions_and_leave_when_the_queue_is_empty(
    slurm: Slurm,  # noqa: F811
    spool: Path,
    tmp_path: Path,
) -> None:
    ids = [f"s{i:03d}" for i in range(200)]
    sources = tmp_path / "sources"
    job_id = submit_pilots(slurm, spool, tmp_path, "--pilots", "2", "--concurrency", "2", "--exit-when-idle", "4s")
    for i, entry in enumerate(ids):
        drop(spool, make_submission(sources, entry, {"run": f"echo {i * 7}"}), entry)
    wait_done(spool, ids, timeout=150)
    for i, entry in enumerate(ids):
        status = result(spool, entry)
        assert (status["state"], status["outcome"], status["attempts"]) == ("done", "ok", 1), status
        assert stage(spool, entry, "run")["stdout"] == f"{i * 7}\n"
    assert sorted(p.name for p in (spool / "done").iterdir()) == ids, "each exactly once, nothing else"
    states = wait_until(lambda: job_over(slurm, job_id), 60, "the pilots left the empty queue")
    assert states == {f"{job_id}_0": ("COMPLETED", "0:0"), f"{job_id}_1": ("COMPLETED", "0:0")}, slurm.logs()
    for task in (0, 1):
        log = (tmp_path / f"pilot-{job_id}_{task}.out").read_text()
        assert "(--exit-when-idle); leaving" in log, log[-2000:]
    assert not list((spool / "workers").glob("*.json")), "both removed their heartbeats"


def running(marker: str) -> bool:
    """Whether any process on this machine has the words of `marker` in its command line."""
    words = marker.replace(" ", "\0").encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if words in cmdline.read_bytes():
                return True
        except OSError:
            continue
    return False


# handed back: the executor's grace (12 s less 10) ends within Slurm's KillWait (5 s, tests/slurm.py),
# so it hands its claim back; killed: its grace (110 s) outlasts KillWait and Slurm's SIGKILL ends
# it mid-stage, so the claim goes back when its lease expires, and its sandbox dies with it.
@pytest.mark.slow  # ~20 s, ~30 s
@pytest.mark.parametrize(("signal_grace", "sleep", "then"), [("12s", "6.25", "released"), ("120s", "9.75", "expired")])
def test_a_pilot_cancelled_mid_stage_loses_nothing(
    slurm: Slurm,  # noqa: F811
    spool: Path,
    tmp_path: Path,
    signal_grace: str,
    sleep: str,
    then: str,
) -> None:
    drop(spool, make_submission(tmp_path, "long", {"run": f"sleep {sleep}; echo survived"}), "long")
    first = submit_pilots(slurm, spool, tmp_path, "--exit-when-idle", "60s", "--signal-grace", signal_grace)
    claim = active_claim(spool, "long", timeout=60, state="running")
    wait_until(lambda: running(f"sleep {sleep}"), 20, "the stage's sleep started")
    slurm.run("scancel", first)
    wait_until(lambda: job_over(slurm, first), 30, "the cancelled pilot gone")
    assert not running(f"sleep {sleep}"), "the stage outlived its pilot"
    if then == "released":
        assert not claim.exists() and (spool / "incoming" / "long").is_dir(), "handed back, not left to a lease"
    # It takes this one job and leaves (a killed pilot's lease may take a few seconds to expire).
    second = submit_pilots(slurm, spool, tmp_path, "--max-jobs", "1", "--exit-when-idle", "60s")
    wait_done(spool, "long", timeout=60)
    status = result(spool, "long")
    assert (status["state"], status["outcome"]) == ("done", "ok"), status
    assert stage(spool, "long", "run")["stdout"] == "survived\n"
    assert [p.name for p in (spool / "done").iterdir()] == ["long"]
    events: list[dict[str, Any]] = attempts_log(spool, "long")
    kinds = [e["event"] for e in events]
    assert kinds[:2] == ["claimed", then] and kinds.count("claimed") == 2, json.dumps(events)
    assert "failed" not in kinds, "no attempt counted against the submission"
    assert wait_until(lambda: job_over(slurm, second), 60, "the second pilot left")[f"{second}_0"] == (
        "COMPLETED",
        "0:0",
    )
