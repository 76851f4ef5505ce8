"""The cost of an interactive test: a trivial dialogue of N round trips (the interactor writes a
byte, the player echoes it) between two sandboxes wired as `grader: interactive` wires them
(runner/judge/interaction.converse: two slots, crossed pipes, the idleness watch sampling both
cgroups), against the same two programs as bare processes with crossed pipes, in the same run.

The dialogue itself is the cost beyond starting: (N round trips) - (0 round trips), for each; the
target is at most 2x the bare one. Rounds alternate the variants; medians over the rounds.

    sudo .venv/bin/python benchmarks/interactive.py [--trips 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from _common import median

from cutor_spool.config import SpoolConfig
from cutor_spool.limits import Limits
from cutor_spool.runner.backend import make_backend
from cutor_spool.runner.judge.interaction import IDLENESS, converse
from cutor_spool.runner.slots import SlotPool
from cutor_spool.runner.stage import StageSpec

PINGPONG = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long n = argc > 2 ? atol(argv[2]) : 0;
    char c = 'x';
    if (argv[1][0] == 'i') {  /* the interactor: n times, write a byte and read the answer */
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        for (long i = 0; i < n; i++)
            if (write(1, &c, 1) != 1 || read(0, &c, 1) != 1) return 1;
        clock_gettime(CLOCK_MONOTONIC, &b);  /* the dialogue alone, as the interactor saw it */
        fprintf(stderr, "%ld\n", (b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec));
        return 0;
    }
    while (read(0, &c, 1) == 1)  /* the player: echo until the end */
        if (write(1, &c, 1) != 1) return 1;
    return 0;
}
"""


def bare(binary: Path, trips: int) -> tuple[float, float]:
    """Seconds for the two programs as plain processes, crossed pipes: start to both ended, and
    the dialogue alone (as the interactor timed it)."""
    to_player, from_player = os.pipe(), os.pipe()
    start = time.perf_counter()
    interactor = subprocess.Popen(
        [binary, "i", str(trips)], stdin=from_player[0], stdout=to_player[1], stderr=subprocess.PIPE
    )
    player = subprocess.Popen([binary, "p"], stdin=to_player[0], stdout=from_player[1])
    for fd in (*to_player, *from_player):
        os.close(fd)
    timed = interactor.communicate()[1]
    codes = interactor.returncode, player.wait()
    elapsed = time.perf_counter() - start
    assert codes == (0, 0), codes
    return elapsed, int(timed) / 1e9


class Sandboxed:
    def __init__(self, binary: Path) -> None:
        config = SpoolConfig()
        state = Path("/run/cutor-spool")
        box = config.sandbox
        self.pool = SlotPool(uid_base=box.uid_base, count=box.slots, work_size=64 << 20, state_dir=state)
        self.backend = make_backend(config.backend, config, state)
        self.limits = Limits.from_spec(config.limits.default)
        self.slots = [self.pool.acquire(), self.pool.acquire()]
        self.boxes = (self.backend.open(self.slots[0], "bench-player"), self.backend.open(self.slots[1], "bench-i"))
        for slot, where in zip(self.slots, ("work", "aux"), strict=True):
            target = slot.writable(where) / "pingpong"
            shutil.copy(binary, target)
            os.chown(target, slot.uid, slot.gid)

    def run(self, trips: int) -> tuple[float, float]:
        player = StageSpec("player", ("/work/pingpong", "p"), self.limits)
        interactor = StageSpec("interactor", ("/work/pingpong", "i", str(trips)), self.limits, workdir="aux")
        start = time.perf_counter()
        sub, inter, idle = converse(self.boxes, (player, interactor), threading.Event(), IDLENESS)
        elapsed = time.perf_counter() - start
        assert sub.ok and inter.ok and not idle, (sub, inter)
        return elapsed, int(inter.stderr) / 1e9

    def close(self) -> None:
        for slot in self.slots:
            self.pool.release(slot)


def measure(trips: int, rounds: int) -> dict[str, float]:
    """Medians in seconds, bare and sandboxed: the whole run with `trips` round trips (`.n`) and
    with none (`.0`), and the dialogue as the interactor timed it (`.dialogue`)."""
    work = Path(tempfile.mkdtemp(prefix="cutor-bench-pingpong-"))
    try:
        (work / "pingpong.c").write_text(PINGPONG)
        subprocess.run(["cc", "-O2", "-o", work / "pingpong", work / "pingpong.c"], check=True)
        sandboxed = Sandboxed(work / "pingpong")
        samples: dict[str, list[float]] = {}
        try:
            for _ in range(rounds):
                for key, run in (("bare", lambda n: bare(work / "pingpong", n)), ("sandboxed", sandboxed.run)):
                    samples.setdefault(f"{key}.0", []).append(run(0)[0])
                    total, dialogue = run(trips)
                    samples.setdefault(f"{key}.n", []).append(total)
                    samples.setdefault(f"{key}.dialogue", []).append(dialogue)
        finally:
            sandboxed.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {key: median(values) for key, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trips", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()
    f = measure(args.trips, args.rounds)
    dialogue_bare, dialogue_box = f["bare.dialogue"], f["sandboxed.dialogue"]
    us = 1e6 / args.trips
    print(f"{args.trips} round trips, medians of {args.rounds} rounds")
    print(f"bare processes       total {f['bare.n'] * 1000:8.2f} ms   start {f['bare.0'] * 1000:7.2f} ms")
    print(f"two sandboxes        total {f['sandboxed.n'] * 1000:8.2f} ms   start {f['sandboxed.0'] * 1000:7.2f} ms")
    print("the dialogue alone, as the interactor timed it:")
    print(f"dialogue, bare       {dialogue_bare * 1000:8.2f} ms ({dialogue_bare * us:.1f} µs per round trip)")
    print(f"dialogue, sandboxed  {dialogue_box * 1000:8.2f} ms ({dialogue_box * us:.1f} µs per round trip)")
    ratio = dialogue_box / dialogue_bare if dialogue_bare > 0 else float("inf")
    print(f"ratio {ratio:.2f}x   target: at most 2x   {'met' if ratio <= 2 else 'NOT met'}")


if __name__ == "__main__":
    main()
