"""`cutor-spool cancel`: a queued or running submission ends `cancelled` with who asked and when, its
sandbox killed and nothing left running; twice, or after the end, is harmless and says so; only the
submitter or root may cancel."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from conftest import CLI, drop, make_submission, result, wait_done, write_config

ROOT = Path(__file__).resolve().parent.parent
# The CLI as another user: Debian's python3 with the venv's packages (the venv's own interpreter
# may live where only root can reach, as pyenv's does under /root).
AS_USER = (
    "import sys; sys.path[:0] = sys.argv[1:3]; del sys.argv[1:3]; sys.argv[0] = 'cutor-spool'; "
    "from cutor_spool.cli import main; main()"
)


def cli(spool: Path, *args: str, user: int | None = None) -> subprocess.CompletedProcess[str]:
    command = [*CLI, "--spool", str(spool), *args]
    if user is not None:
        site = next((ROOT / ".venv" / "lib").glob("python3*/site-packages"))
        command = ["/usr/bin/python3", "-c", AS_USER, str(ROOT), str(site), "--spool", str(spool), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, user=user, group=user, cwd="/")


def processes_of(uid: int) -> list[int]:
    """Pids of processes running as `uid` (a sandbox slot's)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    found.append(int(pid))
            except FileNotFoundError:
                continue
    return found


def test_cancel_a_queued_submission(spool: Path, tmp_path: Path, executors: Any) -> None:
    drop(spool, make_submission(tmp_path, "later", {"run": "echo never"}), "later")
    proc = cli(spool, "cancel", "later", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["result"] == "requested"
    again = cli(spool, "cancel", "later")
    assert again.returncode == 0 and "already requested" in again.stdout
    executors(spool)
    wait_done(spool, "later")
    status = result(spool, "later")
    assert (status["state"], status["outcome"], status["cancelled_by"]) == ("cancelled", None, "root")
    assert "cancelled" in status["states"] and "run" not in status["stages"]
    assert not (spool / "done" / "later" / "result" / "run.json").exists()
    assert not (spool / "cancel" / "later.0").exists()  # the request is spent
    after = cli(spool, "cancel", "later")
    assert after.returncode == 0 and "already ended (cancelled)" in after.stdout
    assert cli(spool, "wait", "later").returncode == 7
    assert cli(spool, "cancel", "no-such").returncode == 6


def test_cancel_a_running_submission_kills_its_sandbox(spool: Path, tmp_path: Path, executors: Any) -> None:
    executors(spool)
    job = {"run": "echo started; sleep 300 & sleep 300; echo never", "limits": {"run": {"wall_time": "600s"}}}
    drop(spool, make_submission(tmp_path, "long", job), "long")
    deadline = time.monotonic() + 60
    uid = None
    while time.monotonic() < deadline:  # running, as the slot uid its status names
        status = next((spool / "active").glob("long.*/result/status.json"), None)
        uid = json.loads(status.read_text()).get("sandbox_uid") if status is not None else None
        if uid is not None and processes_of(uid):
            break
        time.sleep(0.1)
    assert uid is not None and processes_of(uid), "the job never started"
    started = time.monotonic()
    proc = cli(spool, "cancel", "long", "--wait", "--timeout", "60", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert time.monotonic() - started < 20
    status = json.loads(proc.stdout)
    assert (status["state"], status["cancelled_by"]) == ("cancelled", "root")
    assert "while it ran" in status["reason"]
    assert processes_of(uid) == []  # nothing of it is left running
    log = (tmp_path / "executor-0.log").read_text()
    assert "cancelled by root while it ran" in log and " ERROR " not in log  # an ending, not a failure
    assert cli(spool, "submit", str(make_submission(tmp_path, "next", {"run": "echo next"})), "--wait").returncode == 0


def test_only_the_submitter_or_root_may_cancel(tmp_path: Path, executors: Any, request: Any) -> None:
    """uid 65534 may not cancel root's submission; a request it plants by hand is not honoured."""
    base = Path(tempfile.mkdtemp(prefix="cutor-cancel-", dir="/tmp"))
    base.chmod(0o755)  # the other user must reach the spool (pytest's own directory is 0700)
    spool = base / "spool"
    subprocess.run([*CLI, "--spool", str(spool), "init"], check=True, capture_output=True)
    write_config(spool)
    (spool / "cancel").chmod(0o1777)
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    drop(spool, make_submission(tmp_path, "roots", {"run": "echo mine"}), "roots")
    refused = cli(spool, "cancel", "roots", user=65534)
    assert refused.returncode == 1 and "only its submitter" in refused.stderr
    for name in ("roots.65534", "roots.0"):  # its own name, and root's taken in advance
        planted = spool / "cancel" / name
        subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "touch", str(planted)], check=True
        )
    executors(spool)
    wait_done(spool, "roots")
    assert (result(spool, "roots")["state"], result(spool, "roots")["outcome"]) == ("done", "ok")
