"""Chaos across simulated hosts: 4 executors and 2 builders, each in its own UTS and mount
namespace (its own hostname; its tmpfs work areas visible to it alone), 500 submissions mixing
trivial runs, compiles, judged tests and new Nix environments, and a killer that SIGKILLs a random
worker every 2 seconds and restarts it. At the end every submission has exactly one final result,
the right one; attempts are logged; no stage process or cgroup is left. Then again with the spool
served through polling alone, as on NFS."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, need, wait_done
from nixtest import CHANNEL, NIX_ENV, SANDBOX_PATHS, need_nix

from cutor_spool.atomic import read_lines
from cutor_spool.runner.cgroups import CgroupHost

pytestmark = pytest.mark.slow  # minutes each: 500 submissions, Nix builds, a worker killed every 2 s
COUNT = int(os.environ.get("CUTOR_SPOOL_CHAOS_COUNT", "500"))
UID_BASE, SLOTS = 62000, 32  # its own range: the leftover check must see only its own jobs
ENV_EXTRAS = [
    "bash",
    "coreutils",
    "findutils",
    "diffutils",
    "gnugrep",
    "gnused",
    "gawk",
    "gnutar",
    "gzip",
    "gnumake",
    "hello",
    "python3Packages.roman",
]
HELLO_C = (
    '#include <stdio.h>\n#include <stdlib.h>\nint main(void) { printf("compiled-%s\\n", getenv("ID")); return 0; }\n'
)
SUM_C = (
    '#include <stdio.h>\nint main(void) { long a, b; scanf("%ld %ld", &a, &b); printf("%ld\\n", a + b); return 0; }\n'
)


@dataclass
class Worker:
    """One worker of a simulated host: `unshare` gives it its own hostname and mount namespace."""

    kind: str
    host: str
    spool: Path
    log: Path
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    kills: int = 0

    def start(self) -> None:
        argv = [
            "unshare",
            "--uts",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            'hostname "$0" && exec "$@"',
            self.host,
            sys.executable,
            "-m",
            "cutor_spool",
            "--spool",
            str(self.spool),
            "-v",
            self.kind,
            "--host",
            self.host,
            *self.args,
        ]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, **NIX_ENV}
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.kills += 1

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def workload(base: Path) -> dict[str, tuple[str, dict[str, Any], dict[str, str]]]:
    """id -> (kind, submission.yaml, files). Kinds: run, compile, judge, env."""
    jobs: dict[str, tuple[str, dict[str, Any], dict[str, str]]] = {}
    for i in range(COUNT):
        entry_id = f"chaos-{i:04d}"
        kind = ("run", "run", "compile", "judge", "env")[i % 5]
        env = {"ID": entry_id}
        if kind == "run":
            jobs[entry_id] = (kind, {"run": 'echo "ran-$ID"', "env": env}, {})
        elif kind == "compile":
            jobs[entry_id] = (
                kind,
                {"compile": "gcc -O1 -o hello hello.c", "run": "./hello", "env": env},
                {"hello.c": HELLO_C},
            )
        elif kind == "judge":
            a, b = i, 2 * i + 1
            tests = [{"name": f"t{k}", "input": f"{a + k} {b}\n", "output": f"{a + k + b}\n"} for k in range(3)]
            jobs[entry_id] = (
                kind,
                {"compile": "gcc -O1 -o sum sum.c", "run": "./sum", "tests": tests},
                {"sum.c": SUM_C},
            )
        else:
            extra = ENV_EXTRAS[i % len(ENV_EXTRAS)]
            jobs[entry_id] = (
                kind,
                {
                    "dependencies": ["python3", extra],
                    "env": env,
                    "run": 'python3 -c \'import os; print("env-" + os.environ["ID"])\'',
                },
                {},
            )
    return jobs


def expected_stdout(kind: str, entry_id: str) -> str | None:
    return {"run": f"ran-{entry_id}\n", "compile": f"compiled-{entry_id}\n", "env": f"env-{entry_id}\n"}.get(kind)


def leftovers() -> tuple[list[int], list[str]]:
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                uid = os.stat(f"/proc/{name}").st_uid
            except FileNotFoundError:
                continue
            if UID_BASE <= uid < UID_BASE + SLOTS:
                pids.append(int(name))
    host = CgroupHost.detect()
    groups = [
        c.name for c in host.existing("u") if c.name[1:6].isdigit() and UID_BASE <= int(c.name[1:6]) < UID_BASE + SLOTS
    ]
    groups += [c.name for c in host.existing("nixbuild-")]
    return pids, groups


def run_chaos(base: Path, *, poll: bool) -> None:
    need_nix()
    need(shutil.which("unshare") is not None, "util-linux unshare")
    spool = base / "spool"
    subprocess.run(
        [sys.executable, "-m", "cutor_spool", "--spool", str(spool), "init"], check=True, capture_output=True, cwd=ROOT
    )
    config = {
        "version": 1,
        "settle": "0.5s",
        "heartbeat": "0.5s",
        "lease_timeout": "3s",
        "rescan": "2s",
        "poll_interval": "0.2s",
        # A submission can be caught by the killer several times; only a real fault may end it in error.
        "max_attempts": 10,
        "sandbox": {"uid_base": UID_BASE, "slots": SLOTS, "work_size": "128MiB", "tmp_size": "32MiB"},
        "nix": {"nixpkgs": str(CHANNEL), "sandbox_paths": SANDBOX_PATHS, "build_timeout": "120s"},
        "status_page": {"enabled": False},
    }
    (spool / "spool.yaml").write_text(yaml.safe_dump(config))
    mode = ["--poll"] if poll else []
    workers = [
        Worker("executor", f"host-{n}", spool, base / f"executor-{n}.log", ["--concurrency", "2", *mode])
        for n in range(1, 5)
    ]
    workers += [
        Worker(
            "builder",
            f"build-{n}",
            spool,
            base / f"builder-{n}.log",
            ["--signing-key", str(base / "signing.key"), "--state-dir", str(base / f"bstate-{n}"), *mode],
        )
        for n in range(1, 3)
    ]
    for worker in workers:
        worker.start()
    jobs = workload(base)
    order = list(jobs)
    random.Random(7).shuffle(order)
    stop_killing = threading.Event()

    def killer() -> None:
        rng = random.Random(11)
        while not stop_killing.wait(2.0):
            victim = rng.choice(workers)
            victim.kill()
            victim.start()

    chaos = threading.Thread(target=killer, daemon=True)
    chaos.start()
    try:
        for entry_id in order:
            _, sub, files = jobs[entry_id]
            staging = spool / "tmp" / entry_id
            (staging).mkdir(parents=True)
            (staging / "submission.yaml").write_text(yaml.safe_dump(sub))
            for name, content in files.items():
                (staging / name).write_text(content)
            (staging / ".ready").write_text("")
            os.rename(staging, spool / "incoming" / entry_id)
            time.sleep(0.01)
        wait_done(spool, order, timeout=1500)
    finally:
        stop_killing.set()
        chaos.join()
        for worker in workers:
            worker.stop()
    # Each submission was written in the spool's tmp/ and renamed from there into incoming/, as a
    # client does: nothing of it is left in tmp/, and its files exist nowhere but in its done/ entry
    # (no worker leaves a copy of a submission behind, in the spool or in its state directory).
    staged = sorted(p.name for p in (spool / "tmp").iterdir() if p.name in jobs)
    assert staged == [], f"left in tmp/: {staged[:10]}"
    sources = {"submission.yaml", "hello.c", "sum.c"}
    copies = [p for p in base.rglob("*") if p.name in sources and (spool / "done") not in p.parents]
    assert copies == [], f"sources outside done/: {copies[:10]}"
    in_done = Counter(p.name for entry in (spool / "done").iterdir() for p in entry.iterdir() if p.name in sources)
    assert in_done == Counter(name for _, _, files in jobs.values() for name in ["submission.yaml", *files])

    # Exactly one final result per submission: nothing missing, nothing twice, nothing left over.
    assert sorted(p.name for p in (spool / "done").iterdir()) == sorted(order)
    assert list((spool / "incoming").iterdir()) == [] and list((spool / "active").iterdir()) == []
    retried, hosts = 0, Counter()
    for entry_id in order:
        kind, _, _ = jobs[entry_id]
        result = spool / "done" / entry_id / "result"
        status = json.loads((result / "status.json").read_text())
        hosts[status["host"]] += 1
        if kind == "judge":
            assert (status["state"], status["outcome"], status["score"]) == ("done", "accepted", 3), (entry_id, status)
        else:
            assert (status["state"], status["outcome"]) == ("done", "ok"), (entry_id, status)
            run = json.loads((result / "run.json").read_text())
            assert run["stdout"] == expected_stdout(kind, entry_id), (entry_id, run["stdout"])
        records = read_lines(result / "attempts.jsonl")
        log = [r["event"] for r in records]
        assert log.count("claimed") == status["attempts"], (entry_id, records)
        if status["attempts"] > 1:
            retried += 1
            # Every claim after the first follows an expiry, a failure or a hand-back.
            raw = (result / "attempts.jsonl").read_text()
            assert "expired" in log or "failed" in log or "released" in log, (entry_id, records, raw)
    kills = sum(w.kills for w in workers)
    assert kills >= 5
    assert retried > 0, "the killer never caught a submission mid-way: the test proved nothing"
    assert set(hosts) <= {f"host-{n}" for n in range(1, 5)} and len(hosts) >= 2
    builds = list((spool / "builds" / "done").iterdir())
    assert len(builds) == len(ENV_EXTRAS)
    for build in builds:
        assert json.loads((build / "result.json").read_text())["status"] == "ok"

    # No stage process and no cgroup of theirs outlives the workers.
    deadline = time.monotonic() + 15
    pids, groups = leftovers()
    while (pids or groups) and time.monotonic() < deadline:
        time.sleep(0.5)
        pids, groups = leftovers()
    assert (pids, groups) == ([], []), f"left behind: processes {pids}, cgroups {groups}"
    print(
        f"chaos ({'poll' if poll else 'inotify'}): {len(order)} submissions, {kills} kills, {retried} retried, "
        f"hosts {dict(hosts)}"
    )


@pytest.mark.timeout(1800)
def test_chaos_with_inotify(tmp_path: Path) -> None:
    run_chaos(tmp_path, poll=False)


@pytest.mark.timeout(1800)
def test_chaos_with_polling_alone(tmp_path: Path) -> None:
    run_chaos(tmp_path, poll=True)
