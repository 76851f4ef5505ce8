"""The hostile suite: every folder in tests/hostile/ is a program that attacks the sandbox, with its
expected status in `expect.yaml`. All of them run through a real executor on each backend, at
once, next to a victim submission that holds a secret; each must be contained with its expected
status, and the executor must live on."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CLI, ROOT, ExecutorProcess, drop, make_submission, need, result, wait_done, write_config
from docker_image.fixtures import IMAGE, start_engine_and_build

from cutor_spool.runner.slots import processes_of

HOSTILE = Path(__file__).parent / "hostile"
CASES = sorted(p.name for p in HOSTILE.iterdir() if (p / "expect.yaml").exists())
# The quick tier runs the suite on bubblewrap only: on Docker it costs ~45 s more (containers for
# every case, and the victim's 25 s run waited out at the end, by the last test or the teardown);
# test_docker_backend.py keeps Docker in the quick tier.
BACKENDS = ["bubblewrap", pytest.param("docker", marks=pytest.mark.slow)]


class LoopbackServer:
    """A TCP server on the host's loopback that counts who reached it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


@dataclass
class Run:
    backend: str
    spool: Path
    executor: ExecutorProcess
    shadow_before: tuple[int, ...]
    server: LoopbackServer
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


def shadow_stat() -> tuple[int, ...]:
    st = os.stat("/etc/shadow")
    return (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@pytest.fixture(scope="module", params=BACKENDS)
def hostile_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    backend = request.param
    if backend == "docker":
        need((problem := start_engine_and_build()) is None, problem or "")
    base = tmp_path_factory.mktemp(f"hostile-{backend}")
    spool = base / "spool"
    subprocess.run([*CLI, "--spool", str(spool), "init"], check=True, capture_output=True, cwd=ROOT)
    write_config(spool, backend=backend, docker={"image": IMAGE})
    server = LoopbackServer()
    executor = ExecutorProcess(spool, ["executor", "--concurrency", "3"], base / "executor.log")
    # The victim: a submission holding a secret, running while the attackers look for it.
    victim = make_submission(
        base,
        "victim",
        {"run": "sleep 25", "limits": {"run": {"wall_time": "30s"}}},
        {"secret.txt": "the victim's secret\n"},
    )
    drop(spool, victim, "victim")
    deadline = time.monotonic() + 30
    victim_paths: list[str] = []
    while time.monotonic() < deadline and not victim_paths:
        for claim in (spool / "active").glob("victim.*"):
            status = claim / "result" / "status.json"
            if status.exists() and json.loads(status.read_text()).get("state") == "running":
                uid = json.loads(status.read_text())["sandbox_uid"]
                victim_paths = [
                    str(claim / "secret.txt"),
                    f"/run/cutor-spool/slots/{uid}/work/secret.txt",
                    f"/run/cutor-spool/slots/{uid}/work",
                ]
        time.sleep(0.05)
    assert victim_paths, "the victim never started"
    run = Run(backend, spool, executor, shadow_stat(), server)
    inject = {
        "HOST_PORT": str(server.port),
        "VICTIM_PATHS": ":".join(victim_paths),
        "SPOOL_PATH": str(spool),
        "EXECUTOR_PID": str(executor.pid),
    }
    for case in CASES:
        target = base / "cases" / case
        shutil.copytree(HOSTILE / case, target, ignore=shutil.ignore_patterns("expect.yaml"))
        shutil.copy(HOSTILE / "probe.py", target / "probe.py")
        sub = yaml.safe_load((target / "submission.yaml").read_text())
        wanted = yaml.safe_load((HOSTILE / case / "expect.yaml").read_text()).get("inject", [])
        if wanted:
            sub["env"] = {**sub.get("env", {}), **{k: inject[k] for k in wanted}}
            (target / "submission.yaml").write_text(yaml.safe_dump(sub))
        drop(spool, target, case)
    wait_done(spool, CASES, timeout=240)
    for case in CASES:
        run.results[case] = result(spool, case)
    yield run
    executor.stop()
    server.close()


def _number(text: str) -> int:
    match = re.search(r"\d+", text)
    assert match, text
    return int(match.group())


@pytest.mark.parametrize("case", CASES)
def test_hostile_program_is_contained(hostile_run: Run, case: str) -> None:
    expect = yaml.safe_load((HOSTILE / case / "expect.yaml").read_text())
    status = hostile_run.results[case]
    entry = hostile_run.spool / "done" / case / "result"
    assert status["state"] == "done", f"{case}: {status}"
    if not (entry / "run.json").exists():
        compile_out = json.loads((entry / "compile.json").read_text()) if (entry / "compile.json").exists() else {}
        pytest.fail(f"{case}: no run stage; compile said {compile_out.get('stderr', '')[-500:]!r}")
    run = json.loads((entry / "run.json").read_text())
    assert run["status"] in expect["status"], (
        f"{case}: {run['status']} not in {expect['status']}; {run['stderr'][-400:]!r}"
    )
    stdout = run["stdout"]
    if "stdout" in expect:
        assert stdout == expect["stdout"]
    for part in expect.get("stdout_contains", []):
        assert part in stdout, f"{case}: {part!r} not in {stdout!r}"
    for part in expect.get("stdout_excludes", []):
        assert part not in stdout, f"{case}: {part!r} in {stdout!r}"
    if "stdout_regex" in expect:
        assert re.match(expect["stdout_regex"], stdout), stdout
    if "max_number" in expect:
        assert _number(stdout) <= expect["max_number"], stdout
    if "stdout_length" in expect:
        assert len(stdout.encode()) == expect["stdout_length"] and run["truncated"]["stdout"]
    if "stderr_length" in expect:
        assert len(run["stderr"].encode()) == expect["stderr_length"] and run["truncated"]["stderr"]
    if "max_cpu_time" in expect:
        assert run["cpu_time"] <= expect["max_cpu_time"], run["cpu_time"]
    if "min_cpu_time" in expect:
        assert run["cpu_time"] >= expect["min_cpu_time"], run["cpu_time"]
    if "signal" in expect:
        assert run["signal"] == expect["signal"]
    uid = status["sandbox_uid"]
    assert uid >= 1000, "a job must never run as root"
    if expect.get("uid_is_slot"):
        assert f"uid {uid} euid {uid}" in stdout
    if expect.get("no_leftovers"):
        deadline = time.monotonic() + 5
        while processes_of(uid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert processes_of(uid) == [], "processes of the stage outlived it"
    if expect.get("shadow_untouched"):
        assert shadow_stat() == hostile_run.shadow_before, "/etc/shadow changed"
    if expect.get("server_untouched"):
        assert hostile_run.server.connections == 0


def test_worker_lives_on_after_the_hostile_suite(hostile_run: Run, tmp_path: Path) -> None:
    spool = hostile_run.spool
    assert hostile_run.executor.proc is not None and hostile_run.executor.proc.poll() is None
    drop(spool, make_submission(tmp_path, "after", {"run": "echo still serving"}), "after-hostile")
    wait_done(spool, ["after-hostile", "victim"], timeout=60)
    assert (
        json.loads((spool / "done" / "after-hostile" / "result" / "run.json").read_text())["stdout"]
        == "still serving\n"
    )
    assert result(spool, "victim")["outcome"] == "ok"
    assert shadow_stat() == hostile_run.shadow_before
