"""Shared fixtures: real spools on disk, real executor processes, real sandboxes.

Nothing here fakes the component under test. Where a test needs a system service (Docker, Nix)
that is missing, it is skipped locally but fails when CUTOR_SPOOL_CI=1 (as `.ci/run` sets), so a
broken CI machine cannot pass by skipping.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from hypothesis import settings

if TYPE_CHECKING:
    from cutor_spool.runner.results import Reporter
    from cutor_spool.watcher.claim import Claim

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CUTOR_SPOOL_CI") == "1"
# Strict mode (watcher/worker.py): a programming error in a worker stops it and is re-raised, for
# in-process workers and for the worker processes started here (they inherit the environment),
# instead of being retried as a system failure where no test would notice it.
os.environ.setdefault("CUTOR_SPOOL_STRICT", "1")
CLI = [sys.executable, "-m", "cutor_spool"]

# Short timings so that protocol tests run in seconds. The lease is 6 heartbeats: on a loaded
# 2-core machine a worker's maintenance thread was seen waiting up to 1.5 s for the CPU.
LEASE_TIMEOUT = 3.0
FAST_CONFIG: dict[str, Any] = {
    "version": 1,
    "settle": "0.5s",
    "heartbeat": "0.5s",
    "lease_timeout": f"{LEASE_TIMEOUT}s",
    "max_attempts": 3,
    "rescan": "1s",
    "poll_interval": "0.1s",
    "sandbox": {"slots": 32, "work_size": "128MiB", "tmp_size": "32MiB"},
}


# Two tiers. Without options everything runs, as in CI. `--quick` leaves out the tests marked
# `slow` (above ~5 s each on a 2-core machine, or the only users of a costly fixture) and loads the
# hypothesis profile "quick", with fewer examples, so that a change is checked in a few minutes;
# "ci" keeps the full counts. A module whose every test takes longer keeps its quickest one, so
# that all but test_chaos.py and test_benchmarks.py run some tests in the quick tier.
settings.register_profile("ci", max_examples=10_000)
settings.register_profile("quick", max_examples=100)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--quick", action="store_true", help="Leave out tests marked slow and run property tests with fewer examples."
    )


def pytest_configure(config: pytest.Config) -> None:
    # Before any test module is imported: a hypothesis `settings(...)` takes its defaults from the
    # profile loaded when it is built. An explicit --hypothesis-profile wins.
    if not config.getoption("--hypothesis-profile", default=None):
        settings.load_profile("quick" if config.getoption("--quick") else "ci")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--quick"):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


def need(condition: bool, reason: str) -> None:
    """Skip locally when a service is missing; fail in CI."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def write_config(spool: Path, **overrides: Any) -> None:
    config = json.loads(json.dumps(FAST_CONFIG))
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = value
    (spool / "spool.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    root = tmp_path / "spool"
    subprocess.run([*CLI, "--spool", str(root), "init"], check=True, capture_output=True)
    write_config(root)
    return root


def unmount_under(directory: Path) -> None:
    """Lazily unmounts whatever is still mounted below `directory`, deepest first: a worker killed
    by a test leaves its slot's tmpfs mounted, and the directory cannot be removed until it goes."""
    with open("/proc/self/mounts", encoding="utf-8") as fh:
        points = [line.split()[1] for line in fh if line.split()[1].startswith(f"{directory}/")]
    for point in sorted(points, reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A fresh directory under /run that the slot uids can traverse, for a state directory
    (pytest's own temporary directory is 0700, which bubblewrap as a slot uid cannot enter and
    the executor refuses); whatever is mounted in it is unmounted, and it is removed, afterwards."""
    path = Path(tempfile.mkdtemp(prefix="cutor-test-", dir="/run"))
    path.chmod(0o755)
    yield path
    unmount_under(path)
    shutil.rmtree(path, ignore_errors=True)


def make_submission(
    parent: Path, name: str, yaml_text: str | dict[str, Any], files: dict[str, str | bytes] | None = None
) -> Path:
    """A submission directory built outside the spool (as a client would)."""
    directory = parent / name
    directory.mkdir(parents=True)
    text = yaml_text if isinstance(yaml_text, str) else yaml.safe_dump(yaml_text)
    (directory / "submission.yaml").write_text(text)
    for rel, content in (files or {}).items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return directory


def drop(spool: Path, directory: Path, entry_id: str) -> None:
    """The atomic drop `cutor-spool submit` does: copy into tmp/, .ready, rename into incoming/."""
    staging = spool / "tmp" / f"drop-{entry_id}"
    shutil.copytree(directory, staging, symlinks=True)
    (staging / ".ready").write_text("")
    os.rename(staging, spool / "incoming" / entry_id)


def result(spool: Path, entry_id: str) -> dict[str, Any]:
    return json.loads((spool / "done" / entry_id / "result" / "status.json").read_text())


def stage(spool: Path, entry_id: str, name: str) -> dict[str, Any]:
    return json.loads((spool / "done" / entry_id / "result" / f"{name}.json").read_text())


def started_claim(spool: Path, name: str) -> tuple[Claim, Reporter]:
    """incoming/<name> claimed by an executor's queue in this process, and its reporter started,
    as an executor begins a claim."""
    from cutor_spool.layout import SpoolPaths
    from cutor_spool.runner.results import Reporter
    from cutor_spool.watcher.queue import SpoolQueue, WorkerIdentity

    identity = WorkerIdentity.make("executor")
    claim = SpoolQueue(SpoolPaths(spool).submissions, identity, log_name="result/attempts.jsonl").claim(name)
    assert claim is not None
    reporter = Reporter(claim, identity)
    reporter.start()
    return claim, reporter


def wait_done(spool: Path, ids: list[str] | str, timeout: float = 60.0) -> None:
    wanted = [ids] if isinstance(ids, str) else list(ids)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        missing = [i for i in wanted if not (spool / "done" / i / "result" / "status.json").exists()]
        if not missing:
            return
        time.sleep(0.05)
    raise AssertionError(f"not done after {timeout}s: {missing[:10]} (of {len(wanted)})")


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Polls `condition` until it returns something true, and returns that; fails after `timeout`
    seconds, saying what never happened."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not after {timeout}s: {what}")
        time.sleep(interval)


def hold(condition: Callable[[], bool], seconds: float, what: str, interval: float = 0.1) -> None:
    """Asserts that `condition` stays true for `seconds`: for checks that something does *not*
    happen, where no event can say "it never will", so the wait is a fixed, bounded time."""
    deadline = time.monotonic() + seconds
    while True:
        assert condition(), what
        if time.monotonic() > deadline:
            return
        time.sleep(interval)


class ExecutorProcess:
    def __init__(self, spool: Path, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.spool, self.args, self.log = spool, args, log
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.logfile = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*CLI, "--spool", str(self.spool), "-v", *self.args],
            stdout=self.logfile,
            stderr=subprocess.STDOUT,
            env=self.env,
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logfile.close()
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.logfile.close()
        self.proc = None

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def executors(tmp_path: Path) -> Iterator[Any]:
    """Factory: `executors(spool, "--concurrency", "2")` starts a real executor process."""
    started: list[ExecutorProcess] = []

    def start(spool: Path, *args: str, env: dict[str, str] | None = None) -> ExecutorProcess:
        log = tmp_path / f"executor-{len(started)}.log"
        proc = ExecutorProcess(spool, ["executor", *args], log, env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
    unmount_under(tmp_path)  # a --state-dir here keeps the tmpfs of its /etc or its Docker files
