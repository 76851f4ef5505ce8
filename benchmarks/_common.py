"""Helpers shared by the benchmark scripts: a scratch spool, executor processes, percentiles."""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BENCH_CONFIG: dict[str, Any] = {
    "version": 1,
    "settle": "1s",
    "heartbeat": "1s",
    "lease_timeout": "10s",
    "rescan": "5s",
    "poll_interval": "0.1s",
    "sandbox": {"slots": 32, "work_size": "64MiB", "tmp_size": "16MiB"},
    "status_page": {"enabled": False},
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def median(values: list[float]) -> float:
    return statistics.median(values)


@contextmanager
def scratch_spool(**overrides: Any) -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="cutor-bench-"))
    spool = base / "spool"
    subprocess.run(
        [sys.executable, "-m", "cutor_spool", "--spool", str(spool), "init"], check=True, capture_output=True, cwd=ROOT
    )
    config = {**BENCH_CONFIG, **overrides}
    (spool / "spool.yaml").write_text(yaml.safe_dump(config))
    try:
        yield spool
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def executors(spool: Path, count: int, *args: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "cutor_spool", "--spool", str(spool), "-q", "executor", *args],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(list((spool / "workers").glob("*.json"))) < count:
        time.sleep(0.05)
    time.sleep(0.3)
    try:
        yield procs
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(30)


def make_source(base: Path, name: str, submission: dict[str, Any]) -> Path:
    source = base / name
    source.mkdir(parents=True, exist_ok=True)
    (source / "submission.yaml").write_text(yaml.safe_dump(submission))
    return source


def drop(spool: Path, source: Path, entry_id: str) -> None:
    staging = spool / "tmp" / f"bench-{entry_id}"
    shutil.copytree(source, staging)
    (staging / ".ready").write_text("")
    os.rename(staging, spool / "incoming" / entry_id)


class DoneWatch:
    """Times the appearance of done/<id> with inotify (the benchmark must not poll against the
    executor for the two cores)."""

    def __init__(self, done: Path) -> None:
        from cutor_spool.watcher.notify import DirectoryWatch

        self.seen: dict[str, float] = {}
        self.cond = threading.Condition()
        self.watch = DirectoryWatch([done], self._on)
        self.watch.start()

    def _on(self, _directory: Path, name: str) -> None:
        with self.cond:
            self.seen.setdefault(name, time.perf_counter())
            self.cond.notify_all()

    def wait(self, name: str, timeout: float = 60) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: name in self.seen, timeout):
                raise TimeoutError(name)
            return self.seen[name]

    def wait_all(self, names: list[str], timeout: float = 600) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: all(n in self.seen for n in names), timeout):
                raise TimeoutError(f"{sum(n in self.seen for n in names)}/{len(names)} done")
            return max(self.seen[n] for n in names)

    def close(self) -> None:
        self.watch.stop()


def bare_exec_ms(argv: list[str], n: int = 50) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append((time.perf_counter() - start) * 1000)
    return median(times)
