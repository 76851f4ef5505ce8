"""The executor's circuit breaker (cutor_spool/runner/health.py) as logic: when it pauses, how its
probes back off, when it resumes. The probe and the clock are stand-ins here (a host that breaks
and heals on cue); the real fault, end to end with bubblewrap, is in test_reliability.py."""

from __future__ import annotations

import threading

from cutor_spool.runner.health import SandboxHealth


class Host:
    def __init__(self) -> None:
        self.now = 0.0
        self.broken: str | None = None
        self.probes = 0
        self.changes: list[str | None] = []

    def probe(self) -> str | None:
        self.probes += 1
        return self.broken

    def health(self) -> SandboxHealth:
        return SandboxHealth(self.probe, self.changes.append, first_delay=5, max_delay=20, clock=lambda: self.now)


def test_a_failure_the_probe_does_not_share_is_the_submissions() -> None:
    host = Host()
    health = host.health()
    assert health.host_is_at_fault() is False
    assert health.may_claim(threading.Event()) is True
    assert (host.probes, host.changes) == (1, [])


def test_a_broken_host_pauses_backs_off_and_resumes_when_a_probe_passes() -> None:
    host, stopping = Host(), threading.Event()
    stopping.set()  # may_claim's short waits return at once
    health = host.health()
    host.broken = "bwrap: Permission denied"
    assert health.host_is_at_fault() is True
    assert host.changes == ["broken, claiming paused: bwrap: Permission denied"]
    assert health.host_is_at_fault() is True and host.probes == 1  # known broken: no second probe
    retries = []
    for _ in range(6):  # each probe that fails doubles the wait: 5, 10, 20, then capped at 20
        host.now = health.retry_at - 0.1
        assert health.may_claim(stopping) is False
        probes = host.probes
        host.now = health.retry_at
        assert health.may_claim(stopping) is False and host.probes == probes + 1
        retries.append(health.retry_at - host.now)
    assert retries == [10, 20, 20, 20, 20, 20]
    host.broken = None
    host.now = health.retry_at
    assert health.may_claim(stopping) is True
    assert host.changes[-1] is None and not health.is_broken()
    assert health.may_claim(stopping) is True  # healthy: no probe at all
    probes = host.probes
    health.may_claim(stopping)
    assert host.probes == probes


def test_a_probe_that_raises_counts_as_a_failed_probe() -> None:
    def probe() -> str | None:
        raise OSError("no slots")

    changes: list[str | None] = []
    health = SandboxHealth(probe, changes.append, clock=lambda: 0.0)
    assert health.host_is_at_fault() is True
    assert changes == ["broken, claiming paused: the probe failed: OSError: no slots"]
