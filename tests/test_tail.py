"""Live output: while a stage runs, `cutor-spool tail` shows its output so far; `--follow` prints
every byte once, in order, until the submission ends; nothing of it stays behind."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from conftest import CLI, drop, make_submission, wait_done


def test_tail_shows_output_while_it_runs_and_follow_prints_it_all_once(
    spool: Path, tmp_path: Path, executors: Any
) -> None:
    executors(spool)
    script = "for i in $(seq 1 40); do echo line $i; echo err $i >&2; sleep 0.05; done"
    drop(spool, make_submission(tmp_path, "slow", {"run": script}), "slow")
    deadline = time.monotonic() + 60
    live = None
    while time.monotonic() < deadline:
        live = next((spool / "active").glob("slow.*/result/live/run.json"), None)
        if live is not None:
            break
        time.sleep(0.02)
    assert live is not None, "no live output while it ran"
    follower = subprocess.Popen(
        [*CLI, "--spool", str(spool), "tail", "slow", "--follow"], stdout=subprocess.PIPE, text=True
    )
    now = subprocess.run([*CLI, "--spool", str(spool), "tail", "slow"], capture_output=True, text=True, timeout=60)
    so_far = now.stdout.splitlines()  # what there is so far, from the start of each stream
    assert now.returncode == 0 and so_far
    assert [n for n in so_far if n.startswith("line")][:1] in ([], ["line 1"])
    assert [n for n in so_far if n.startswith("err")][:1] in ([], ["err 1"])
    out, _ = follower.communicate(timeout=120)
    assert follower.returncode == 0
    expected = "".join(f"line {i}\nerr {i}\n" for i in range(1, 41))
    lines = out.splitlines()  # each stream in its own order; how the two interleave is the kernel's
    assert [n for n in lines if n.startswith("line")] == [f"line {i}" for i in range(1, 41)]
    assert [n for n in lines if n.startswith("err")] == [f"err {i}" for i in range(1, 41)]
    assert len(lines) == 80
    wait_done(spool, "slow")
    assert not list((spool / "done" / "slow" / "result" / "live").iterdir())
    again = subprocess.run([*CLI, "--spool", str(spool), "tail", "slow"], capture_output=True, text=True, timeout=60)
    assert sorted(again.stdout.splitlines()) == sorted(expected.splitlines())
