"""Every stage runs in a cgroup of its own (issue 18: no cgroup counter survives into the next
stage), made with that stage's limits. What a user checks: each stage's CPU time and peak memory
are its own, each stage's memory limit holds whatever the limits of the stage before were, and
nothing of the sandbox's cgroups is left once it is closed. Real bubblewrap and cgroups, both
constructions (warm slots and a fresh bwrap per stage).

Seen failing: with the stage's limits written only when a stage's cgroup was new (a cgroup made
ahead with the previous stage's limits, tried on 2026-12-06 and not kept), the 64 MiB stage
allocated its 100 MiB.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from cutor_spool.limits import Limits
from cutor_spool.runner.bwrap import BubblewrapBackend
from cutor_spool.runner.slots import SlotPool
from cutor_spool.runner.stage import StageSpec, StageStatus

UID_BASE = 61930  # a range of its own
STATE = Path("/run/cutor-spool-test-stage-cgroups")
LIMITS = Limits(
    cpu_time=10, wall_time=60, memory=512 << 20, processes=32, file_size=16 << 20, open_files=64, stack=8 << 20,
    output=1 << 20,
)  # fmt: skip
BURN = "import time; b = bytearray(96 << 20); t = time.process_time() + 0.3\nwhile time.process_time() < t: pass"
ALLOCATE = "b = bytearray(100 << 20); print('allocated')"


@pytest.fixture(scope="module", params=["warm", "bwrap"])
def backend(request: pytest.FixtureRequest) -> Iterator[BubblewrapBackend]:
    warm = request.param == "warm"
    made = BubblewrapBackend(state_dir=STATE, uid_base=UID_BASE, slots=1, tmp_size=16 << 20, warm=warm)
    assert (made.trees is not None) == warm
    yield made
    made.close()


def _python(code: str, limits: Limits = LIMITS) -> StageSpec:
    return StageSpec("run", ("/usr/bin/python3", "-c", code), limits)


def test_each_stage_counts_and_limits_only_itself_and_nothing_is_left(backend: BubblewrapBackend) -> None:
    pool = SlotPool(uid_base=UID_BASE, count=1, work_size=32 << 20, state_dir=STATE)
    slot = pool.acquire()
    box = backend.open(slot, "cgroups")
    try:
        outputs = [box.run(_python("print('warm-up')")), box.run(_python(BURN))]
        for _ in range(3):
            outputs.append(box.run(_python("print('quiet')")))
        small = replace(LIMITS, memory=64 << 20)
        outputs.append(box.run(_python(ALLOCATE, small)))  # the stage before had 512 MiB
        outputs.append(box.run(_python(ALLOCATE)))  # and the one before 64 MiB
        assert [o.status for o in outputs] == [StageStatus.OK] * 5 + [StageStatus.MEMORY_LIMIT, StageStatus.OK]
        burn, quiet = outputs[1], outputs[2:5]
        assert burn.cpu_time >= 0.25 and burn.memory >= 96 << 20, (burn.cpu_time, burn.memory)
        for out in quiet:
            assert out.stdout == b"quiet\n"
            assert out.cpu_time < 0.2 and out.memory < 48 << 20, (out.cpu_time, out.memory)
        assert outputs[-1].stdout == b"allocated\n"
    finally:
        box.close()
        pool.release(slot, clean=True)
    assert backend.cgroups.existing(f"{slot.name}-") == []
