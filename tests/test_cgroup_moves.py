"""The executor's check of what a cgroup move costs after a pause (runner/cgroup_moves.py), on
this host's real cgroups.

Whether this host is slow cannot be chosen by a test: on the development machine, kernel 6.18
keeps moves fast for good once `favordynmods` was set (it was, to measure it, on 2026-12-06).
So the real measurement is checked for what holds on any host (a figure, no cgroup left behind,
leftovers of dead executors removed), and the warning for a slow host is checked with the
measurement replaced by a slow figure: the one fault here that only a stand-in can give.
"""

from __future__ import annotations

import logging
import os
import subprocess

import pytest

from cutor_spool.runner import cgroup_moves
from cutor_spool.runner.cgroup_moves import PREFIX, advice, check_in_background, move_after_pause
from cutor_spool.runner.cgroups import CgroupHost


@pytest.fixture
def host() -> CgroupHost:
    if os.geteuid() != 0:
        pytest.skip("cgroups need root")
    return CgroupHost.detect()


def names(host: CgroupHost) -> set[str]:
    return {cgroup.name for cgroup in host.existing(PREFIX)}


def test_a_move_after_a_pause_is_measured_and_leaves_no_cgroup(host: CgroupHost) -> None:
    before = names(host)
    cost = move_after_pause(host, pause=0.01)
    assert 0 < cost < 1000
    assert names(host) == before


def test_the_check_removes_what_a_dead_executor_left_and_spares_a_live_ones(host: CgroupHost) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    live = subprocess.Popen(["sleep", "30"])
    try:
        host.create(f"{PREFIX}{dead.pid}")
        host.create(f"{PREFIX}{live.pid}")
        move_after_pause(host, pause=0.0)
        left = names(host)
        assert f"{PREFIX}{dead.pid}" not in left
        assert f"{PREFIX}{live.pid}" in left
    finally:
        live.kill()
        live.wait()
        for cgroup in host.existing(f"{PREFIX}{live.pid}"):
            cgroup.remove()


def test_advice_only_for_a_move_that_waited() -> None:
    assert advice(0.3) is None
    message = advice(8.4)
    assert message is not None
    assert "8.4 ms" in message
    assert "favordynmods" in message


def test_a_slow_host_is_told_in_the_log(
    host: CgroupHost, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(cgroup_moves, "move_after_pause", lambda _host: 9.25)  # a slow host, see above
    with caplog.at_level(logging.WARNING, logger=cgroup_moves.__name__):
        check_in_background(host).join(10)
    assert any("9.2 ms" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_a_failed_measurement_changes_nothing_but_a_line(
    host: CgroupHost, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(_host: CgroupHost) -> float:
        raise OSError("no cgroup for you")

    monkeypatch.setattr(cgroup_moves, "move_after_pause", broken)
    with caplog.at_level(logging.INFO, logger=cgroup_moves.__name__):
        thread = check_in_background(host)
        thread.join(10)
    assert not thread.is_alive()
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert "no cgroup for you" in caplog.records[0].getMessage()


def test_cgroups_of_dead_processes_are_found_by_the_pid_after_the_prefix(host: CgroupHost) -> None:
    """The mechanism the check and the builder's sweep share (`<prefix><pid>-<n>`, the builder's
    build cgroups): a dead process's are found, a live one's and other names are not."""
    prefix = f"leftovertest{os.getpid()}-"
    dead = subprocess.Popen(["true"])
    dead.wait()
    made = [host.create(f"{prefix}{dead.pid}-1"), host.create(f"{prefix}{os.getpid()}-1"), host.create(f"{prefix}x-1")]
    try:
        assert [c.name for c in host.left_by_dead(prefix)] == [f"{prefix}{dead.pid}-1"]
    finally:
        for cgroup in made:
            cgroup.remove()
