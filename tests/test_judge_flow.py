"""Judge mode end to end, as a user follows it: status.json while tests run, the CLI's exit codes
and summary for judged submissions, what carries over between tests, and the examples."""

from __future__ import annotations

import json
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import yaml
from conftest import CLI, ROOT, drop, make_submission, result, wait_done

EXAMPLES = ROOT / "examples"


def cli(spool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "--spool", str(spool), *args], capture_output=True, text=True, timeout=180)


def test_status_json_shows_judging_as_it_happens(spool: Path, tmp_path: Path, executors: Any) -> None:
    sub = {
        "run": "sleep 0.4; cat",
        "tests": [{"input": "a", "output": "a"}, {"input": "b", "output": "x"}, {"input": "c", "output": "c"}],
    }
    drop(spool, make_submission(tmp_path, "slow", sub), "slow")
    executors(spool)
    seen: list[tuple[Any, ...]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (spool / "done" / "slow").exists():
        for status_file in (spool / "active").glob("slow.*/result/status.json"):
            try:
                status = json.loads(status_file.read_text())
            except (OSError, ValueError):
                continue
            snapshot = (status["state"], status.get("test"), status.get("tests_done"), status.get("verdicts"))
            if not seen or seen[-1] != snapshot:
                seen.append(snapshot)
        time.sleep(0.02)
    wait_done(spool, "slow")
    testing = [s for s in seen if s[0] == "testing"]
    assert ("testing", "1", 0, {}) in testing, seen
    assert ("testing", "2", 1, {"accepted": 1}) in testing, seen
    assert ("testing", "3", 2, {"accepted": 1, "wrong_answer": 1}) in testing, seen
    final = result(spool, "slow")
    assert final["tests"] == {"1": "accepted", "2": "wrong_answer", "3": "accepted"}
    assert (final["score"], final["max_score"], final["outcome"]) == (2, 3, "partial")
    assert "failed_subtasks" not in final  # no subtasks: the seeds leave it out


def test_cli_follows_a_judged_submission(spool: Path, tmp_path: Path, executors: Any) -> None:
    executors(spool, "--concurrency", "2")
    good = make_submission(tmp_path, "good", {"run": "cat", "tests": [{"input": "1", "output": "1"}]})
    proc = cli(spool, "submit", str(good), "--wait", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["outcome"] == "accepted"

    partial = make_submission(
        tmp_path, "partial", {"run": "cat", "tests": [{"input": "1", "output": "1"}, {"input": "2", "output": "3"}]}
    )
    proc = cli(spool, "submit", str(partial), "--id", "partial", "--wait")
    assert proc.returncode == 1
    assert "partial" in proc.stdout and "score 1/2" in proc.stdout
    events = [json.loads(line) for line in (spool / "done/partial/result/events.jsonl").read_text().splitlines()]
    assert [(e["test"], e["verdict"]) for e in events if e["event"] == "tested"] == [
        ("1", "accepted"),
        ("2", "wrong_answer"),
    ]

    broken = make_submission(
        tmp_path,
        "broken-checker",
        {"run": "cat", "tests": [{"input": "1"}], "checker": {"type": "program", "run": "exit 3"}},
    )
    proc = cli(spool, "submit", str(broken), "--id", "broken", "--wait", "--json")
    assert proc.returncode == 4  # state error: the system could not judge it
    status = json.loads(proc.stdout)
    assert status["state"] == "error" and "checker failed (exit status 3)" in status["reason"]
    assert status["attempts"] == 1  # a broken checker is not retried: it would break again
    assert ET.parse(spool / "done/broken/result/junit.xml").getroot().get("errors") == "1"


def test_work_carries_over_between_tests_and_tmp_does_not(spool: Path, tmp_path: Path, executors: Any) -> None:
    """Documented behaviour (docs/judge.md): tests run in order in one /work, each with a fresh /tmp."""
    run = 'cat /work/mark /tmp/mark 2>/dev/null; read -r x; echo "$x" > /work/mark; echo "$x" > /tmp/mark'
    tests = [{"input": "one\n", "output": ""}, {"input": "two\n", "output": "one\n"}]
    drop(spool, make_submission(tmp_path, "carry", {"run": run, "tests": tests}), "carry")
    executors(spool)
    wait_done(spool, "carry")
    assert result(spool, "carry")["tests"] == {"1": "accepted", "2": "accepted"}
    second = json.loads((spool / "done/carry/result/tests/2.json").read_text())
    assert second["stdout"] == "one\n"  # /work/mark from test 1, once: /tmp/mark is gone


def test_examples_score_full_partial_and_zero(spool: Path, executors: Any) -> None:
    expected = {
        "judge-sum-full": ("accepted", 100, []),
        "judge-sum-partial": ("partial", 30, ["large"]),
        "judge-sum-zero": ("rejected", 0, ["small", "large"]),
    }
    shared = None
    for name in expected:
        data = yaml.safe_load((EXAMPLES / name / "submission.yaml").read_text())
        tests = {k: data[k] for k in ("tests", "subtasks", "scoring", "checker", "limits")}
        assert shared is None or tests == shared, f"{name}: its tests drifted from the others'"
        shared = tests
        assert cli(spool, "submit", str(EXAMPLES / name), "--id", name).returncode == 0
    executors(spool, "--concurrency", "2")
    wait_done(spool, list(expected), timeout=120)
    for name, (outcome, score, failed) in expected.items():
        status = result(spool, name)
        assert (status["outcome"], status["score"], status["max_score"]) == (outcome, score, 100), status
        assert status["failed_subtasks"] == failed
        suites = {s.get("name"): s for s in ET.parse(spool / "done" / name / "result/junit.xml").getroot()}
        assert set(suites) == {f"{name}/small", f"{name}/large"}
