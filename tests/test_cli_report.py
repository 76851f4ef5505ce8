"""What `submit --wait`, `wait` and `status` show of a result, and `list`'s filters: as a user reads
them in a terminal (plain, NO_COLOR) and as a script reads `--json`."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, make_submission

from cutor_spool.cli.filters import parse_since
from cutor_spool.cli.report import differing_lines, tail


def cli(spool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "NO_COLOR": "1"}
    return subprocess.run([*CLI, "--spool", str(spool), *args], capture_output=True, text=True, timeout=120, env=env)


def test_tail_keeps_the_end_from_a_line_start() -> None:
    text = "".join(f"line {i}\n" for i in range(1000))
    shown, cut = tail(text, 100)
    assert cut and shown.endswith("line 999\n") and shown.startswith("line ") and len(shown.encode()) <= 100
    assert tail("short\n", 100) == ("short\n", False)


def test_differing_lines_ignores_trailing_spaces_and_names_missing_lines() -> None:
    assert differing_lines("3\n", "3  \n") == []
    assert differing_lines("1\n2\n3\n", "1\n5\n") == [(2, "2", "5"), (3, "3", "")]


def test_since_takes_durations_and_times() -> None:
    now = datetime(2026, 12, 5, 12, tzinfo=UTC)
    assert parse_since("2h", now=now) == now - timedelta(hours=2)
    assert parse_since("2026-12-05T10:00:00") == datetime(2026, 12, 5, 10, tzinfo=UTC)
    with pytest.raises(Exception, match="neither a duration"):
        parse_since("yesterday")


def test_the_terminal_shows_what_went_wrong(spool: Path, tmp_path: Path, executors: Any) -> None:
    executors(spool, "--concurrency", "2")
    broken = make_submission(
        tmp_path,
        "broken",
        {"compile": "gcc -o x main.c", "run": "./x"},
        {"main.c": "int main(void) { return nope; }\n"},
    )
    proc = cli(spool, "submit", str(broken), "--id", "broken", "--wait")
    assert proc.returncode == 1
    assert "--- compile stderr ---" in proc.stdout and "nope" in proc.stdout  # the compiler's own message

    noisy = "for i in $(seq 1 5000); do echo out $i; done; echo 'boom: disk on fire' >&2; exit 3"
    crash = make_submission(tmp_path, "crash", {"run": noisy})
    proc = cli(spool, "submit", str(crash), "--id", "crash", "--wait")
    assert proc.returncode == 1
    assert "boom: disk on fire" in proc.stdout and "out 5000" in proc.stdout and "out 1\n" not in proc.stdout
    assert "(tail; all of it: " in proc.stdout and "run.json)" in proc.stdout
    assert "\x1b[" not in proc.stdout  # NO_COLOR, and not a terminal

    report = json.loads(cli(spool, "status", "crash", "--json").stdout)["report"]
    assert report["stages"]["run"]["exit_code"] == 3 and report["stages"]["run"]["stdout_cut"] is True

    judged = make_submission(
        tmp_path,
        "judged",
        {
            "run": "read a b; if [ $a = 10 ]; then echo 31; else echo $((a+b)); fi",
            "tests": [
                {"name": "small", "input": "1 2", "output": "3"},
                {"name": "big", "input": "10 20", "output": "30"},
            ],
        },
    )
    proc = cli(spool, "submit", str(judged), "--id", "judged", "--wait")
    assert proc.returncode == 1
    assert "--- failed tests: 1 ---" in proc.stdout
    assert "big: WA wrong_answer" in proc.stdout and "line 1: expected '30', got '31'" in proc.stdout
    assert "small:" not in proc.stdout
    report = json.loads(cli(spool, "wait", "judged", "--json").stdout)["report"]
    assert [(t["test"], t["differs"]) for t in report["failed_tests"]] == [("big", [[1, "30", "31"]])]


def test_list_filters_and_reasons(spool: Path, tmp_path: Path, executors: Any) -> None:
    executors(spool, "--concurrency", "2")
    for name, spec in (("a-ok", {"run": "true"}), ("a-bad", {"run": "exit 1"}), ("b-ok", {"run": "true"})):
        assert cli(spool, "submit", str(make_submission(tmp_path, name, spec)), "--id", name, "--wait").returncode in (
            0,
            1,
        )
    invalid = make_submission(tmp_path, "inv", "run: echo hi\nbogus: 1\n")
    assert cli(spool, "submit", str(invalid), "--no-check", "--id", "a-inv", "--wait").returncode == 3

    def ids(*args: str) -> set[str]:
        return {row["id"] for row in json.loads(cli(spool, "list", "--json", *args).stdout)["done"]}

    assert ids("--prefix", "a-") == {"a-ok", "a-bad", "a-inv"}
    assert ids("--outcome", "ok") == {"a-ok", "b-ok"}
    assert ids("--state", "invalid") == {"a-inv"}
    assert ids("--prefix", "a-", "--outcome", "runtime_error") == {"a-bad"}
    assert ids("--since", "1h") == {"a-ok", "a-bad", "b-ok", "a-inv"}
    assert ids("--since", (datetime.now(UTC) + timedelta(hours=1)).isoformat()) == set()
    text = cli(spool, "list", "--state", "invalid").stdout
    assert "a-inv  invalid" in text and "bogus" in text  # the reason on its row
    assert cli(spool, "list", "--since", "yesterday").returncode == 2
