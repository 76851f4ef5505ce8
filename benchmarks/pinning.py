"""CPU pinning (spool.yaml `sandbox.pinning`): the spread of the CPU time of one CPU-bound program
(about 1 s) run N times in one slot while another slot runs a CPU hog, with pinning off and on, in
the same process, against the same program run bare on the host beside a bare hog.

The stages are real bubblewrap stages in real cgroups: the backend, the CPUs and the slot pool are
made from a spool.yaml as the executor makes them (`make_backend`, `pinned_cpus`, `SlotPool`), and
the CPU time is the stage result's `cpu_time` (the cgroup's). The hog keeps busy every CPU it may
use (one busy process per CPU of its affinity: two unpinned on a 2-CPU host, one pinned), for the
whole of a variant's runs. The program works on a 256 KiB table (a contest program's working set,
so that a neighbour on its core shows in its time), sized to about `--seconds` of CPU on this host.
The variants run one after the other (bare, off, on); the target is a coefficient of variation
(stdev / mean) of at most 2 % with pinning. Two more variants help read the figures: pinning on
with no hog (the host's own noise), and pinning on with one CPU to hand out (`cpus: [N]`: the hog
and the program share it, as slots do when there are more than CPUs). Below each line: wall time
over CPU time, the CPU others used meanwhile (on the program's CPU when pinned, else on all CPUs,
less the program and the hog: the host's other work), the hypervisor's steal time, and how the
program's CPU time follows that other work (Pearson's r over the runs).

    sudo .venv/bin/python benchmarks/pinning.py [--runs 30] [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml
from _common import ROOT

from cutor_spool.config import BackendName, load_config
from cutor_spool.cpus import format_cpu_list
from cutor_spool.limits import Limits
from cutor_spool.runner.backend import make_backend
from cutor_spool.runner.sandbox import Backend, StageProcess
from cutor_spool.runner.slots import DEFAULT_STATE_DIR, Slot, SlotPool, pinned_cpus
from cutor_spool.runner.stage import StageSpec, StageStatus

UID_BASE = 61300  # a range of its own (slot locks are host-wide): tests/test_pinning.py has 61200
SLOTS = 4
TARGET_CV = 0.02
HOGS = {"spin": "h", "cache": "c"}  # --hog: the program's argument

PROGRAM = r"""
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
static unsigned table[1 << 16];  /* 256 KiB */
static char buffer[16 << 20];     /* the cache hog's: past a core's L2 */
int main(int argc, char **argv) {
    if (argv[1][0] == 'h' || argv[1][0] == 'c') {  /* a hog: one busy process per CPU it may use, until killed */
        cpu_set_t set;
        sched_getaffinity(0, sizeof set, &set);
        for (int i = 1; i < CPU_COUNT(&set); i++)
            if (fork() == 0) break;
        if (argv[1][0] == 'h')
            for (volatile unsigned long n = 0;; n++) {}  /* spin: registers only */
        for (unsigned long n = 0;; n++)  /* cache: writes a line of the buffer after another */
            ((volatile char *)buffer)[(n * 64) % sizeof buffer] += 1;
    }
    long rounds = atol(argv[2]);
    unsigned x = 1;
    for (long i = 0; i < rounds; i++) {
        x = x * 1103515245u + 12345u;
        table[(x >> 8) & 0xffff] += x;
    }
    printf("%u\n", table[x & 0xffff]);
    return 0;
}
"""

LIMITS = Limits(
    cpu_time=60, wall_time=120, memory=64 << 20, processes=64, file_size=1 << 20, open_files=64, stack=8 << 20,
    output=1 << 16,
)  # fmt: skip
HOG_LIMITS = Limits(
    cpu_time=7200, wall_time=7200, memory=64 << 20, processes=64, file_size=1 << 20, open_files=64, stack=8 << 20,
    output=1 << 16,
)  # fmt: skip


@dataclass
class Run:
    cpu: float  # the program's CPU time
    wall: float
    others: float  # CPU time others used meanwhile (on the program's CPU when pinned, else on all): / wall
    steal: float  # the hypervisor's steal time meanwhile, all CPUs: / wall
    hog: float  # the hog's CPU time meanwhile: / wall


@dataclass
class Spread:
    name: str
    runs: list[Run]
    where: str  # the CPUs of the program and of the hog

    @property
    def times(self) -> list[float]:
        return [r.cpu for r in self.runs]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.times)

    @property
    def stdev(self) -> float:
        return statistics.stdev(self.times)

    @property
    def cv(self) -> float:
        return self.stdev / self.mean

    def line(self) -> str:
        return (
            f"{self.name:<22} mean {self.mean:6.3f} s  stdev {self.stdev * 1000:5.1f} ms  CV {self.cv * 100:5.2f} %"
            f"  min {min(self.times):6.3f}  max {max(self.times):6.3f}   {self.where}"
        )

    def diagnosis(self) -> str:
        others = [r.others for r in self.runs]
        wall = statistics.fmean(r.wall / r.cpu for r in self.runs)
        steal = statistics.fmean(r.steal for r in self.runs)
        r = statistics.correlation(self.times, others) if len(set(others)) > 1 else float("nan")
        return (
            f"{'':<22} wall/cpu {wall:4.2f}  hog {statistics.fmean(r.hog for r in self.runs):4.2f} CPU"
            f"  others {statistics.fmean(others):4.2f} CPU"
            f" ({'its CPU' if 'CPU ' in self.where else 'all CPUs'}, besides program and hog)"
            f"  steal {steal * 100:4.1f} %  corr(cpu time, others) {r:+.2f}"
        )


class CpuStat:
    """/proc/stat's busy and steal time per CPU (proc(5)), in seconds."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self) -> None:
        self.busy: dict[int, float] = {}
        self.steal = 0.0
        for line in Path("/proc/stat").read_text().splitlines():
            name, *fields = line.split()
            if name.startswith("cpu") and name != "cpu":
                user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
                self.busy[int(name[3:])] = (user + nice + system + irq + softirq) / self.TICK
                self.steal += steal / self.TICK

    def others(self, before: CpuStat, cpu: int | None, ours: float) -> float:
        """CPU time used since `before` on `cpu` (all CPUs if None) beyond `ours`."""
        cpus = [cpu] if cpu is not None else list(self.busy)
        return max(0.0, sum(self.busy[c] - before.busy[c] for c in cpus) - ours)


def measured(cpu: float, wall: float, before: CpuStat, where: int | None, ours: float, hog: float) -> Run:
    """`ours`: the CPU time of the program, and of the hog where it shares the CPU(s) counted."""
    after = CpuStat()
    return Run(cpu, wall, after.others(before, where, ours) / wall, (after.steal - before.steal) / wall, hog / wall)


def bare_cpu(argv: list[str]) -> float:
    """The CPU time (user + system) of one bare run of `argv`, from its rusage."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} exited {proc.returncode}")
    return usage.ru_utime + usage.ru_stime


def calibrate(binary: Path, seconds: float) -> int:
    """Rounds of the program for about `seconds` of CPU on this host (bare)."""
    rounds = 10_000_000
    while (took := bare_cpu([str(binary), "w", str(rounds)])) < 0.2:
        rounds *= 4
    return int(rounds * seconds / took)


def group_cpu(pgid: int) -> float:
    """The CPU time of the processes of group `pgid` (the bare hog and its children)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / CpuStat.TICK


def run_bare(binary: Path, rounds: int, runs: int, hog_kind: str) -> Spread:
    hog = subprocess.Popen([binary, HOGS[hog_kind]], start_new_session=True)
    found = []
    try:
        for _ in range(runs):
            before, hog_before, start = CpuStat(), group_cpu(hog.pid), time.perf_counter()
            cpu = bare_cpu([str(binary), "w", str(rounds)])
            wall = time.perf_counter() - start
            hogged = group_cpu(hog.pid) - hog_before
            if hog.poll() is not None:
                raise RuntimeError(f"the hog ended: {hog.returncode}")
            found.append(measured(cpu, wall, before, None, cpu + hogged, hogged))
    finally:
        _kill_tree(hog)
    return Spread("bare", found, "program and hog unpinned")


def _kill_tree(hog: subprocess.Popen[bytes]) -> None:
    """The bare hog and its forked children (they share its process group: it was started in a
    session of its own)."""
    try:
        os.killpg(hog.pid, 9)
    except ProcessLookupError:
        pass
    hog.wait()


class Slots:
    """A backend, its CPUs and a slot pool, made from spool.yaml as the executor makes them."""

    def __init__(self, pinning: bool, state: Path, cpus: list[int] | None = None) -> None:
        spool = Path(tempfile.mkdtemp(prefix="cutor-bench-pinning-"))
        pin: dict[str, object] = {"enabled": pinning, **({"cpus": cpus} if cpus else {})}
        config = {"version": 1, "sandbox": {"uid_base": UID_BASE, "slots": SLOTS, "pinning": pin}}
        (spool / "spool.yaml").write_text(yaml.safe_dump(config))
        try:
            self.config = load_config(spool)
        finally:
            shutil.rmtree(spool)
        box = self.config.sandbox
        self.backend: Backend = make_backend(BackendName.BUBBLEWRAP, self.config, state)
        given = pinned_cpus(box.pinning, self.backend.cpus())
        self.pool = SlotPool(
            uid_base=box.uid_base, count=box.slots, work_size=box.work_size, state_dir=state, cpus=given
        )

    @contextmanager
    def slot(self, binary: Path) -> Iterator[Slot]:
        slot = self.pool.acquire()
        try:
            target = slot.writable("work") / "cpu"
            shutil.copy(binary, target)
            os.chown(target, slot.uid, slot.gid)
            yield slot
        finally:
            self.pool.release(slot)


def run_sandboxed(slots: Slots, binary: Path, rounds: int, runs: int, name: str, hog: str | None) -> Spread:
    """`hog`: "spin" or "cache" (the hog's kind), None for none."""
    with slots.slot(binary) as hog_slot, slots.slot(binary) as slot:
        hog_box = slots.backend.open(hog_slot, "bench-hog")
        box = slots.backend.open(slot, "bench-cpu")
        hogging: StageProcess | None = None
        if hog:
            hogging = hog_box.spawn(StageSpec("hog", ("/work/cpu", HOGS[hog]), HOG_LIMITS), stdout=None)
        found = []
        try:
            for _ in range(runs):
                before, hog_before = CpuStat(), (hogging.cpu_seconds() or 0.0) if hogging else 0.0
                out = box.run(StageSpec("run", ("/work/cpu", "w", str(rounds)), LIMITS))
                if out.status != StageStatus.OK:
                    raise RuntimeError(f"the program's stage ended {out.status}: {out.message} {out.stderr!r}")
                hogged = 0.0
                if hogging is not None:
                    if (hog_now := hogging.cpu_seconds()) is None:
                        raise RuntimeError(f"the hog ended: {hogging.wait()}")
                    hogged = hog_now - hog_before
                shared = slot.cpu is None or slot.cpu == hog_slot.cpu  # the hog's time is in the CPU's busy time
                ours = out.cpu_time + (hogged if shared else 0.0)
                found.append(measured(out.cpu_time, out.wall_time, before, slot.cpu, ours, hogged))
        finally:
            if hogging is not None:
                hogging.kill()
                hogging.wait()
            box.close()
            hog_box.close()
        where = _where(slot.cpu, hog_slot.cpu if hog else None)
    return Spread(name, found, where)


def _where(cpu: int | None, hog: int | None) -> str:
    if cpu is None:
        return "program and hog unpinned"
    return f"program on CPU {cpu}, " + (f"hog on CPU {hog}" if hog is not None else "no hog")


def measure(runs: int, seconds: float, hog: str) -> tuple[int, list[Spread]]:
    work = Path(tempfile.mkdtemp(prefix="cutor-bench-pinning-"))
    state = DEFAULT_STATE_DIR
    try:
        (work / "cpu.c").write_text(PROGRAM)
        subprocess.run(["cc", "-O2", "-o", work / "cpu", work / "cpu.c"], check=True)
        rounds = calibrate(work / "cpu", seconds)
        last = max(os.sched_getaffinity(0))  # spool.yaml `cpus: [last]`: hog and program share it
        variants: list[Callable[[], Spread]] = [
            lambda: run_bare(work / "cpu", rounds, runs, hog),
            lambda: run_sandboxed(Slots(False, state), work / "cpu", rounds, runs, "pinning off", hog),
            lambda: run_sandboxed(Slots(True, state), work / "cpu", rounds, runs, "pinning on", hog),
            lambda: run_sandboxed(Slots(True, state), work / "cpu", rounds, runs, "pinning on, no hog", None),
            lambda: run_sandboxed(Slots(True, state, [last]), work / "cpu", rounds, runs, "pinning on, one CPU", hog),
        ]
        return rounds, [variant() for variant in variants]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=1.0, help="the program's CPU time, about")
    parser.add_argument(
        "--hog", choices=("spin", "cache"), default="spin",
        help="spin: a loop in registers; cache: writes through 16 MiB, evicting a core's caches",
    )  # fmt: skip
    args = parser.parse_args()
    cpus = format_cpu_list(os.sched_getaffinity(0))
    rounds, spreads = measure(args.runs, args.seconds, args.hog)
    load = os.getloadavg()
    print(f"CPU time of one program ({rounds} rounds), {args.runs} runs beside a CPU hog ({args.hog}); CPUs {cpus}")
    for spread in spreads:
        print(spread.line())
        print(spread.diagnosis())
    pinned = spreads[2].cv
    verdict = "met" if pinned <= TARGET_CV else "NOT met"
    print(f"CV with pinning {pinned * 100:.2f} %   target: at most {TARGET_CV * 100:.0f} %   {verdict}")
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (other work on the host counts)")
    print(f"(this process's own CPU: {resource.getrusage(resource.RUSAGE_SELF).ru_utime:.1f} s user)")


if __name__ == "__main__":
    assert ROOT  # _common puts the checkout first on sys.path
    main()
