"""Helpers shared by the benchmark scripts: a scratch spool, executor processes, percentiles."""

from __future__ import annotations

import atexit
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

POLL_INTERVAL = 0.1  # seconds: polling executors' interval in the scratch spools
BENCH_CONFIG: dict[str, Any] = {
    "version": 1,
    "settle": "1s",
    "heartbeat": "1s",
    "lease_timeout": "10s",
    "rescan": "5s",
    "poll_interval": f"{POLL_INTERVAL}s",
    "sandbox": {"slots": 32, "work_size": "64MiB", "tmp_size": "16MiB"},
    "status_page": {"enabled": False},
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def median(values: list[float]) -> float:
    return statistics.median(values)


# Scratch spools are removed when the process ends, not when each is done with: on a filesystem
# that allocates a new inode past every one freed in the last minutes (ext4 without a journal, as
# this machine's root disk), removing one round's thousands of files made every file of the next
# rounds dearer. A round pays for its own files, never for the cleanup of the round before.
# See docs/benchmarks.md, "Scratch spools outlive their round".
_LEFT: list[Path] = []


@atexit.register
def _remove_scratch() -> None:
    for base in _LEFT:
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def scratch_spool(where: Path | None = None, **overrides: Any) -> Iterator[Path]:
    """A fresh spool under `where` (default: $TMPDIR) with BENCH_CONFIG and `overrides`; removed
    when the process ends (see _LEFT)."""
    base = Path(tempfile.mkdtemp(prefix="cutor-bench-", dir=where))
    spool = base / "spool"
    subprocess.run(
        [sys.executable, "-m", "cutor_spool", "--spool", str(spool), "init"], check=True, capture_output=True, cwd=ROOT
    )
    config = {**BENCH_CONFIG, **overrides}
    (spool / "spool.yaml").write_text(yaml.safe_dump(config))
    _LEFT.append(base)
    yield spool


@contextmanager
def executors(spool: Path, count: int, *args: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`count` executor processes on `spool`, started (heartbeat file written) when this yields;
    SIGTERM on exit. Their logs (-v) go to $CUTOR_BENCH_LOGS/<spool>-<n>.log when it is set."""
    logs = os.environ.get("CUTOR_BENCH_LOGS")
    outputs: list[Any] = []
    for n in range(count):
        if logs:
            Path(logs).mkdir(parents=True, exist_ok=True)
            outputs.append(open(Path(logs) / f"{spool.parent.name}-{n}.log", "ab"))  # noqa: SIM115 - closed below
        else:
            outputs.append(subprocess.DEVNULL)
    verbosity = "-v" if logs else "-q"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "cutor_spool", "--spool", str(spool), verbosity, "executor", *args],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        for out in outputs
    ]
    try:
        deadline = time.monotonic() + 60
        while len(list((spool / "workers").glob("executor-*.json"))) < count:
            dead = [proc.args for proc in procs if proc.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"executors did not start: {dead or 'no heartbeat after 60 s'}")
            time.sleep(0.05)
        time.sleep(0.3)
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            stop(proc)
        for out in outputs:
            if out is not subprocess.DEVNULL:
                out.close()


def stop(proc: subprocess.Popen[bytes], patience: float = 20) -> None:
    """Waits for an executor sent SIGTERM; sends SIGTERM again twice, then SIGKILL, saying so on
    stderr with its threads' states. The figures are measured by then: a slow stop is reported,
    not turned into a failed benchmark. (Executors used to miss a SIGTERM the kernel handed to a
    thread other than the main one; fixed in QueueWorker.run.)"""
    for attempt in range(3):
        try:
            proc.wait(patience)
            return
        except subprocess.TimeoutExpired:
            threads = _thread_states(proc.pid)
            print(f"executor {proc.pid} still running {patience:.0f} s after SIGTERM: {threads}", file=sys.stderr)
            if attempt < 2:
                proc.send_signal(signal.SIGTERM)
    proc.kill()
    proc.wait()
    print(f"executor {proc.pid} killed", file=sys.stderr)


def _thread_states(pid: int) -> str:
    states = []
    for task in sorted(Path(f"/proc/{pid}/task").glob("*")):
        try:
            states.append(f"{(task / 'comm').read_text().strip()}:{(task / 'wchan').read_text().strip()}")
        except OSError:
            continue
    return ", ".join(states)


def make_source(base: Path, name: str, submission: dict[str, Any]) -> Path:
    source = base / name
    source.mkdir(parents=True, exist_ok=True)
    (source / "submission.yaml").write_text(yaml.safe_dump(submission))
    return source


def drop(spool: Path, source: Path, entry_id: str) -> None:
    os.rename(staged(spool, source, entry_id), spool / "incoming" / entry_id)


def staged(spool: Path, source: Path, entry_id: str) -> Path:
    """A copy of `source` in the spool's tmp/, ready: what a client has before its drop (the
    rename into incoming/)."""
    staging = spool / "tmp" / f"bench-{entry_id}"
    shutil.copytree(source, staging)
    (staging / ".ready").write_text("")
    return staging


def check_done(spool: Path, names: list[str], stdout: str = "hi\n") -> None:
    """The figures count only if the work really ran: each of `names` finished `ok` and printed
    `stdout` (a sandbox that fails to start finishes fast too)."""
    for name in names:
        result = spool / "done" / name / "result"
        status = json.loads((result / "status.json").read_text())
        run = json.loads((result / "run.json").read_text())
        if (status.get("state"), status.get("outcome"), run.get("stdout")) != ("done", "ok", stdout):
            raise RuntimeError(f"{name} did not run as expected: {status.get('state')}/{status.get('outcome')}: {run}")


class DoneWatch:
    """Times the appearance of done/<id> with inotify (the benchmark must not poll against the
    executor for the two cores)."""

    def __init__(self, done: Path) -> None:
        from cutor_spool.watcher.notify import DirectoryWatch

        self.seen: dict[str, float] = {}
        self.times: list[float] = []  # in order of arrival
        self.names: list[str] = []
        self.cond = threading.Condition()
        self.watch = DirectoryWatch([done], self._on)
        self.watch.start()

    def _on(self, _directory: Path, name: str) -> None:
        with self.cond:
            if name not in self.seen:
                self.seen[name] = now = time.perf_counter()
                self.times.append(now)
                self.names.append(name)
            self.cond.notify_all()

    def wait(self, name: str, timeout: float = 60) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: name in self.seen, timeout):
                raise TimeoutError(name)
            return self.seen[name]

    def wait_count(self, count: int, timeout: float = 600) -> list[float]:
        """Waits until `count` entries have appeared; their times, in order."""
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.times) >= count, timeout):
                raise TimeoutError(f"{len(self.times)}/{count} done")
            return list(self.times)

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


TRIVIAL = {"run": "echo hi"}


def one_at_a_time(
    count: int,
    *,
    mode: str = "--inotify",
    baselines: dict[str, Callable[[], object]] | None = None,
    tool: list[str] | None = None,
    gap: float = 0.0,
    jitter: float = 0.0,
) -> tuple[dict[str, list[float]], float]:
    """`count` trivial submissions dropped one at a time into a fresh spool with one executor
    (one slot, `mode`), after five to warm up: milliseconds from each drop (the rename into
    incoming/ of a copy the client made in tmp/ before) to its done/<id>
    (under "spool"), each baseline timed once per round beside it, and the seconds the counted
    part took. With `tool` (a command that takes the executor's pid as its last argument), the
    tool is attached to the executor while they run, and sent SIGINT after. With `gap`, the
    executor is left idle that many seconds before each drop (not counted): a submission that
    reaches an idle executor, as most do on a judge or behind the gateway. With `jitter`, each drop
    waits a random part of that many seconds first (not counted): a polling executor's drops then
    fall at random moments of its interval, as clients' do; without it each drop followed the
    executor's last scan by the same short time and waited nearly a whole interval every time
    (a median of 99 ms with a 0.1 s interval)."""
    pause = random.Random(18)
    baselines = baselines or {}
    samples: dict[str, list[float]] = {"spool": [], **{name: [] for name in baselines}}
    with scratch_spool() as spool:
        source = make_source(spool.parent, "trivial", TRIVIAL)
        watch = DoneWatch(spool / "done")
        try:
            with executors(spool, 1, "--concurrency", "1", mode) as procs:
                for i in range(5):
                    drop(spool, source, f"warm-{i}")
                    watch.wait(f"warm-{i}")
                for fn in baselines.values():
                    fn()
                attached = None
                if tool is not None:
                    attached = subprocess.Popen([*tool, str(procs[0].pid)], stderr=subprocess.DEVNULL)
                    time.sleep(1.0)  # let the tool attach (strace, py-spy print nothing to wait on)
                started = time.perf_counter()
                for i in range(count):
                    name = f"lat-{i:05d}"
                    ready = staged(spool, source, name)  # the client's copy: before the drop
                    if gap or jitter:
                        time.sleep(gap + pause.uniform(0, jitter))  # what is measured after
                    t0 = time.perf_counter()
                    os.rename(ready, spool / "incoming" / name)  # the drop
                    samples["spool"].append((watch.wait(name) - t0) * 1000)
                    for key, fn in baselines.items():
                        t0 = time.perf_counter()
                        fn()
                        samples[key].append((time.perf_counter() - t0) * 1000)
                elapsed = time.perf_counter() - started
                if attached is not None:
                    attached.send_signal(signal.SIGINT)
                    attached.wait(60)
            check_done(spool, ["warm-0", f"lat-{count - 1:05d}"])
        finally:
            watch.close()
    return samples, elapsed
