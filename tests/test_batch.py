"""Many submissions at once: `submit DIR…`, `submit --batch FILE.jsonl`, `wait ID…`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from conftest import CLI, make_submission


def cli(spool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "--spool", str(spool), *args], capture_output=True, text=True, timeout=180)


def test_several_directories_and_a_batch_file_each_drop_on_their_own(
    spool: Path, tmp_path: Path, executors: Any
) -> None:
    a = make_submission(tmp_path, "a", {"run": "echo from-a"})
    b = make_submission(tmp_path, "b", {"run": "exit 1"})
    bad = make_submission(tmp_path, "bad", "run: echo x\nbogus: 1\n")
    lines = [
        {"id": "inline-1", "submission": {"run": "cat data.txt"}, "files": {"data.txt": "héllo\n"}},
        {"id": "inline-2", "submission": {"run": "python3 -c 'print(6*7)'"}},
        "not json at all",
        {"submission": {"run": "true"}, "extra": 1},
        {"id": "escape", "submission": {"run": "true"}, "files": {"../x": "no"}},
    ]
    batch = tmp_path / "jobs.jsonl"
    batch.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")

    proc = cli(spool, "submit", str(a), str(b), str(bad), "--batch", str(batch), "--json")
    assert proc.returncode == 3, proc.stderr  # some were invalid; the others were dropped
    rows = json.loads(proc.stdout)
    dropped = [r["id"] for r in rows if "errors" not in r]
    refused = {r["source"].rsplit("/", 1)[-1]: r["errors"] for r in rows if "errors" in r}
    assert len(dropped) == 4 and {"inline-1", "inline-2"} <= set(dropped)
    assert set(refused) == {"bad", "jobs.jsonl:3", "jobs.jsonl:4", "jobs.jsonl:5"}
    assert any("bogus" in e for e in refused["bad"])
    assert any("not JSON" in e for e in refused["jobs.jsonl:3"])
    assert any("extra: unknown key" in e for e in refused["jobs.jsonl:4"])
    assert any("not a plain relative name" in e for e in refused["jobs.jsonl:5"])
    assert len(list((spool / "incoming").iterdir())) == 4

    executors(spool, "--concurrency", "2")
    waited = cli(spool, "wait", *dropped, "--json", "--timeout", "120")
    assert waited.returncode == 1  # the highest: b failed
    ends = {s["id"]: (s["state"], s["outcome"]) for s in json.loads(waited.stdout)}
    assert ends["inline-1"] == ("done", "ok") and ends["inline-2"] == ("done", "ok")
    run = json.loads((spool / "done" / "inline-1" / "result" / "run.json").read_text())
    assert run["stdout"] == "héllo\n"
    assert list(ends.values()).count(("done", "runtime_error")) == 1

    both = cli(spool, "submit", str(make_submission(tmp_path, "c", {"run": "echo c"})), str(a), "--wait")
    assert both.returncode == 0 and both.stdout.count(": done (ok)") == 2
    assert cli(spool, "submit", str(a), str(b), "--id", "x").returncode == 2
    assert cli(spool, "wait", "inline-1", "no-such").returncode == 6
