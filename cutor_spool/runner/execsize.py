"""Will a stage's arguments and environment fit through exec? Checked at intake, so that a
submission whose `args` and `env` the kernel would refuse (E2BIG) ends `invalid` at once with the
reason, instead of failing to start its sandbox, being retried as a system failure and ending
`error`.

What the kernel counts (fs/exec.c, `bprm_stack_limits`): every argv and envp string with its NUL,
plus a pointer for each, against a room of a quarter of the exec'ing process's RLIMIT_STACK,
capped at 6 MiB (3/4 of _STK_LIM) and never below ARG_MAX (128 KiB); no single string may exceed
MAX_ARG_STRLEN (32 pages, 128 KiB with its NUL).

A stage's strings pass through several execs, and each must fit:

- the executor's own exec of the launcher and bwrap, under the *executor's* RLIMIT_STACK (the
  systemd default of 8 MiB gives 2 MiB): bwrap's argv carries each `env` entry as three strings
  (`--setenv`, name, value) and every argument, next to the sandbox's own options;
- bwrap's exec of the job, under the *stage's* stack limit: `NAME=value` per entry and the
  arguments (the Docker backend's exec carries the same).

The count below is bwrap's (the larger: three strings per variable), for both backends, so that a
submission is valid or not whatever backend runs it. SANDBOX_MARGIN is kept for what the sandbox
adds: its namespaces and mounts, the launcher's cgroup and rlimit options, the started-marker
wrapper, the base environment (about 2.2 KiB together, measured), and a read-only bind per Nix
store path of the dependencies (about 150 bytes each: the margin holds some 400 of them).
"""

from __future__ import annotations

import resource
from collections.abc import Mapping, Sequence

ARG_MAX = 128 * 1024  # the kernel's floor for the room, whatever the stack limit
MAX_ARG_STRLEN = 32 * 4096  # one string, its NUL included
STACK_CAP = 6 * 1024 * 1024  # 3/4 of _STK_LIM: the room never grows past this
POINTER = 8
SANDBOX_MARGIN = 64 * 1024
SETENV = "--setenv"


def exec_room(stack: int) -> int:
    """The bytes of argv + envp (strings, NULs and pointers) an exec under RLIMIT_STACK `stack`
    may carry."""
    return max(ARG_MAX, min(STACK_CAP, stack // 4))


def own_stack() -> int:
    """This process's RLIMIT_STACK (the executor's, when it validates: its exec of the sandbox is
    the first the strings pass through)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_STACK)
    return 1 << 62 if soft == resource.RLIM_INFINITY else soft


def string_bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass")) + 1


def exec_size(args: Sequence[str], env: Mapping[str, str]) -> int:
    """What `args` and `env` take of the sandbox's exec, as the kernel counts it."""
    size = sum(string_bytes(a) + POINTER for a in args)
    return size + sum(string_bytes(SETENV) + string_bytes(k) + string_bytes(v) + 3 * POINTER for k, v in env.items())


def too_long(args: Sequence[str], env: Mapping[str, str]) -> list[tuple[str, int]]:
    """(field path, bytes) of every single string the kernel refuses (over MAX_ARG_STRLEN)."""
    found = [(f"args.{i}", string_bytes(a)) for i, a in enumerate(args) if string_bytes(a) > MAX_ARG_STRLEN]
    for key, value in env.items():
        size = string_bytes(f"{key}={value}")
        if size > MAX_ARG_STRLEN:
            found.append((f"env.{key}", size))
    return found


def exec_problems(stage: str, args: Sequence[str], env: Mapping[str, str], stack: int) -> list[tuple[str, str]]:
    """(where, message) for a stage whose `args` and `env` cannot be exec'd under a stage stack
    limit of `stack` (and this process's own)."""
    problems = [
        (where, f"is {size:,} bytes with its NUL: the kernel takes at most {MAX_ARG_STRLEN:,} per string")
        for where, size in too_long(args, env)
    ]
    size = exec_size(args, env)
    room = min(exec_room(stack), exec_room(own_stack()))
    allowed = room - SANDBOX_MARGIN
    if size > allowed:
        what = "args and env" if args else "env"
        problems.append(
            (
                what,
                f"the {stage} stage's {what} take {size:,} bytes at exec (strings, NULs and pointers); at most "
                f"{allowed:,} fit: the kernel allows {room:,} for its stack limit, {SANDBOX_MARGIN:,} of them "
                "kept for the sandbox's own",
            )
        )
    return problems
