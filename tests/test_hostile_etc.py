"""Host secrets stay out of the sandbox's /etc (issue 15: the toolchains' /etc rule, docs/security.md
"The sandbox's /etc"), through a real executor on bubblewrap.

Secrets are planted at the host paths they have on a real host, under names of their own that are
removed afterwards: a TLS private key in /etc/ssl/private, an SSH host key (world-readable, as a
careless operator leaves one), a sudoers.d drop-in, the spool's server key in /etc/cutor-spool, a
file only root may read; and a value in the executor's own environment. The host's /etc/shadow
and /etc/gshadow lines are secrets too. A probe job reads every file it can reach under /etc (and
its own and pid 1's environ) and reports any secret it finds, with network and without, under
the default `sandbox.etc` and under `etc: ["*"]` (an operator exposing all of /etc): the denylist
and the others-may-read rule must win either way. The probe also reports that it read the
toolchain files the rule exposes, so that a probe which reads nothing cannot pass.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import CLI, ExecutorProcess, drop, make_submission, result, wait_done, write_config

PROBE = r"""
import os, sys
needles = [line.encode() for line in sys.stdin.read().splitlines() if line]
found, read = set(), 0
def check(path):
    global read
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return
    read += 1
    for needle in needles:
        if needle in data or needle in path.encode():
            found.add(path)
for top, dirs, files in os.walk("/etc", followlinks=True):
    for name in dirs + files:
        if any(n in name.encode() for n in needles):
            found.add(os.path.join(top, name))
        check(os.path.join(top, name))
for path in ("/proc/self/environ", "/proc/1/environ"):
    check(path)
print("read", read, "java.security" if os.path.exists("/etc/java-17-openjdk/security/java.security") else "")
for path in sorted(found):
    print("FOUND", path)
"""


@dataclass
class Planted:
    needles: list[str]
    names: list[str]


def _plant(path: Path, content: str, mode: int, made: list[Path]) -> None:
    missing = [p for p in reversed(path.parents) if not p.exists()]
    for directory in missing:
        directory.mkdir(mode=0o755)
        made.append(directory)
    path.write_text(content)
    path.chmod(mode)
    made.append(path)


@pytest.fixture
def planted() -> Iterator[Planted]:
    tag = secrets.token_hex(6)
    made: list[Path] = []
    files = {
        Path(f"/etc/ssl/private/cutor-test-{tag}.key"): 0o640,
        Path(f"/etc/ssh/ssh_host_cutortest{tag}_key"): 0o644,
        Path(f"/etc/sudoers.d/cutor-test-{tag}"): 0o644,
        Path(f"/etc/cutor-spool/server-test-{tag}.key"): 0o644,
        Path(f"/etc/cutor-test-{tag}.secret"): 0o600,
    }
    needles = []
    try:
        for path, mode in files.items():
            needle = f"SECRET-{secrets.token_hex(12)}"
            _plant(path, f"-----BEGIN PRIVATE KEY-----\n{needle}\n", mode, made)
            needles.append(needle)
        for name in ("shadow", "gshadow"):
            host = Path("/etc") / name
            if host.exists():
                needles += [line for line in host.read_text().splitlines() if len(line) > 16]
        yield Planted(needles, [f"cutor-test-{tag}", f"cutortest{tag}", f"server-test-{tag}"])
    finally:
        for path in reversed(made):
            if path.is_dir():
                path.rmdir()
            else:
                path.unlink(missing_ok=True)


CASES = {"default": None, "everything": ["*"]}


@pytest.mark.slow
@pytest.mark.parametrize("etc", list(CASES))
def test_no_host_secret_in_the_sandbox_etc(etc: str, planted: Planted, tmp_path: Path, run_dir: Path) -> None:
    spool = tmp_path / "spool"
    subprocess.run([*CLI, "--spool", str(spool), "init"], check=True, capture_output=True)
    sandbox = {"slots": 32, "work_size": "128MiB", "tmp_size": "32MiB"}
    if CASES[etc] is not None:
        sandbox["etc"] = CASES[etc]
    write_config(spool, backend="bubblewrap", allow_network=True, sandbox=sandbox)
    env_secret = f"SECRET-{secrets.token_hex(12)}"
    needles = [*planted.needles, *planted.names, env_secret]
    # Its own state directory: the prepared /etc is per state directory, built from this host now.
    executor = ExecutorProcess(
        spool,
        ["executor", "--concurrency", "2", "--state-dir", str(run_dir)],
        tmp_path / "executor.log",
        env={"CUTOR_TEST_SECRET": env_secret},
    )
    ids = []
    for network in (False, True):
        name = f"probe-{'net' if network else 'offline'}"
        spec = {"run": "python3 probe.py", "stdin": "\n".join(needles) + "\n", "network": network}
        drop(spool, make_submission(tmp_path, name, spec, {"probe.py": PROBE}), name)
        ids.append(name)
    try:
        wait_done(spool, ids, timeout=120)
    finally:
        executor.stop()
    runs = {}
    for name in ids:
        status = result(spool, name)
        run = json.loads((spool / "done" / name / "result" / "run.json").read_text())
        assert status["state"] == "done" and run["status"] == "ok", f"{name}: {status} {run.get('stderr')}"
        runs[name] = run["stdout"].splitlines()
    found = {name: [line for line in lines if line.startswith("FOUND")] for name, lines in runs.items()}
    assert found == {name: [] for name in ids}, f"sandbox.etc {etc}: secrets in the sandbox"
    for name, lines in runs.items():
        summary = lines[0].split()
        assert summary[0] == "read" and int(summary[1]) > 20, lines
        assert summary[2:] == ["java.security"], f"{etc}/{name}: the toolchain files are not there: {lines}"
