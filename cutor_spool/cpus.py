"""CPU lists as the kernel writes them (`0-3,8,10-11`: cpuset(7) "List format"), and as
spool.yaml's `sandbox.pinning.cpus` may give them (that string, or a YAML list of numbers)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

MAX_CPU = 8191  # the kernel's largest NR_CPUS (CONFIG_NR_CPUS_RANGE_END)


def parse_cpu_list(value: object) -> tuple[int, ...]:
    """The CPUs of `value` (a list string, or a list of numbers), sorted, each once. ValueError
    names what is wrong. An empty string is no CPU (an empty cpuset file)."""
    if isinstance(value, list | tuple):
        cpus = set()
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int):
                raise ValueError(f"{item!r} is not a CPU number")
            cpus.add(_cpu(item))
        return tuple(sorted(cpus))
    if not isinstance(value, str):
        raise ValueError(f'{value!r} is not a CPU list (like "0-3,8" or [0, 1])')
    cpus = set()
    for part in value.strip().split(","):
        if not part.strip() and not value.strip():
            continue
        first, dash, last = part.strip().partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ValueError(f"{part.strip()!r} in {value!r} is not a CPU or a range of CPUs (like 0-3)")
        low, high = int(first), int(last) if dash else int(first)
        if low > high:
            raise ValueError(f"the range {part.strip()!r} goes backwards")
        cpus.update(_cpu(n) for n in range(low, min(high, MAX_CPU + 1) + 1))
        _cpu(high)
    return tuple(sorted(cpus))


def _cpu(n: int) -> int:
    if not 0 <= n <= MAX_CPU:
        raise ValueError(f"CPU {n} is out of range (0-{MAX_CPU})")
    return n


def format_cpu_list(cpus: Iterable[int]) -> str:
    """`[0, 1, 2, 5]` -> `"0-2,5"`."""
    ranges: list[list[int]] = []
    for cpu in sorted(set(cpus)):
        if ranges and ranges[-1][1] == cpu - 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def thread_siblings(cpus: Iterable[int], sysfs: Path = Path("/sys/devices/system/cpu")) -> dict[int, frozenset[int]]:
    """Each CPU's hyperthread siblings, itself included (`topology/thread_siblings_list`): the
    CPUs that share its core. A CPU whose topology cannot be read is taken as a core of its own."""
    siblings = {}
    for cpu in cpus:
        try:
            same = frozenset(parse_cpu_list((sysfs / f"cpu{cpu}" / "topology" / "thread_siblings_list").read_text()))
        except (OSError, ValueError):
            same = frozenset()
        siblings[cpu] = same | {cpu}
    return siblings
