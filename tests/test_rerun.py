"""`cutor-spool rerun`: a finished submission run again, linked to the old one that stays as it
was; `rerun --problem DIR` rejudges every submission of a problem against its fixed tests."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml
from conftest import CLI, make_submission


def cli(spool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "--spool", str(spool), *args], capture_output=True, text=True, timeout=180)


def status(spool: Path, entry_id: str) -> dict[str, Any]:
    return json.loads((spool / "done" / entry_id / "result" / "status.json").read_text())


def test_rerun_keeps_the_old_result_and_links_the_new(spool: Path, tmp_path: Path, executors: Any) -> None:
    executors(spool)
    job = make_submission(tmp_path, "job", {"run": "cat input.txt"}, {"input.txt": "first\n"})
    assert cli(spool, "submit", str(job), "--id", "job", "--wait").returncode == 0
    before = (spool / "done" / "job" / "result" / "status.json").read_bytes()

    proc = cli(spool, "rerun", "job", "--wait", "--json")
    assert proc.returncode == 0, proc.stderr
    (again,) = json.loads(proc.stdout)
    assert (again["id"], again["rerun_of"], again["outcome"]) == ("job-r1", "job", "ok")
    assert json.loads((spool / "done" / "job-r1" / "result" / "run.json").read_text())["stdout"] == "first\n"
    assert (spool / "done" / "job" / "result" / "status.json").read_bytes() == before  # kept as it was

    named = json.loads(cli(spool, "rerun", "job", "--as", "job-again", "--json").stdout)
    assert named == [{"rerun_of": "job", "id": "job-again"}]
    assert cli(spool, "rerun", "job").stdout.startswith("job-r2")
    busy = make_submission(tmp_path, "busy", {"run": "sleep 60", "limits": {"run": {"wall_time": "90s"}}})
    subprocess.run([*CLI, "--spool", str(spool), "submit", str(busy), "--id", "busy"], check=True)
    early = cli(spool, "rerun", "busy")
    assert early.returncode == 1 and ("still queued" in early.stderr or "still active" in early.stderr)
    assert cli(spool, "cancel", "busy", "--wait").returncode == 0
    assert cli(spool, "rerun", "no-such").returncode == 1
    assert cli(spool, "rerun").returncode == 2


def test_rerun_problem_rejudges_every_submission_with_the_fixed_tests(
    spool: Path, tmp_path: Path, executors: Any
) -> None:
    executors(spool, "--concurrency", "2")
    wrong_tests = {"problem": "double", "tests": [{"name": "t1", "input": "2", "output": "5"}]}  # a bad expected output
    solutions = {"right": "read x; echo $((x*2))", "off": "read x; echo $((x*2+1))"}
    for name, run in solutions.items():
        sub = make_submission(tmp_path, name, {"run": run, **wrong_tests})
        assert cli(spool, "submit", str(sub), "--id", name, "--wait").returncode == (1 if name == "right" else 0)
    other = make_submission(tmp_path, "other", {"run": "echo 4", "tests": [{"input": "", "output": "4"}]})
    assert cli(spool, "submit", str(other), "--id", "other", "--wait").returncode == 0
    assert (status(spool, "right")["outcome"], status(spool, "off")["outcome"]) == ("rejected", "accepted")

    problem = tmp_path / "problem"
    problem.mkdir()
    fixed = {"problem": "double", "tests": [{"name": "t1", "input": "2", "output_file": "t1.out"}]}
    (problem / "submission.yaml").write_text(yaml.safe_dump(fixed))
    (problem / "t1.out").write_text("4\n")
    proc = cli(spool, "rerun", "--problem", str(problem), "--wait", "--json")
    ends = {s["rerun_of"]: (s["id"], s["outcome"]) for s in json.loads(proc.stdout)}
    assert ends == {"right": ("right-r1", "accepted"), "off": ("off-r1", "rejected")}, proc.stderr
    assert status(spool, "right")["outcome"] == "rejected"  # the old verdicts stay
    again = json.loads(cli(spool, "rerun", "--problem", str(problem), "--json").stdout)
    assert sorted(r["rerun_of"] for r in again) == ["off", "right"]  # reruns are not rejudged themselves
