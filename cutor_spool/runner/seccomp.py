"""The system call policy every stage runs under, on both backends (README: "System calls").

A submission needs files, memory, processes, pipes and (when allowed) sockets. It never needs to
debug other processes, mount filesystems, load kernel code or reach the kernel interfaces that
most local privilege escalations of recent years went through (io_uring, eBPF, userfaultfd,
keyrings, perf events). The policy below denies those, group by group, each with its reason; it
is data, so the README's list, the tests and both backends read the same thing.

How it is compiled, and why libseccomp (through `pyseccomp`, ctypes over the system's
libseccomp2) rather than a BPF generator of our own: the names must become the right numbers on
every ABI a job can use from an x86-64 process (x86-64, x32 and i386 through `int 0x80`), the
filter must check the architecture and the x32 bit, and argument checks (`clone`'s namespace
flags, `personality`) must be compiled correctly. libseccomp does all of that and is what runc
compiles Docker's profiles with, so both backends resolve a name the same way.

- bubblewrap reads the compiled classic BPF program from a file descriptor (`--seccomp FD`,
  loaded after the sandbox is set up, just before its pid 1 is exec'd): `write_filter` writes it
  once per host, content-addressed, and each stage passes an open descriptor of it.
- Docker takes a JSON profile (`security_opt=["seccomp=<json>"]`), which replaces the engine's
  default: `docker_profile` gives the same rules over a default of "allow". Names the engine's
  default also refuses are in the policy (docs/docker.md says which, and what is still allowed
  there that the default refuses).

A denied call fails with EPERM (`action: errno`, the default: the program sees an error and its
verdict is its own) or ends the stage (`action: kill`: the kernel kills the process with SIGSYS,
and the stage's status is `security_violation`). `clone3` always fails with ENOSYS, whatever the
action: its flags are in memory a filter cannot read, and ENOSYS is what makes glibc fall back to
`clone`, whose namespace flags the filter can check.
"""

from __future__ import annotations

import errno
import hashlib
import json
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cutor_spool.atomic import write_bytes
from cutor_spool.config import SeccompAction, SeccompConfig
from cutor_spool.errors import ConfigError, SandboxError

try:
    import pyseccomp  # type: ignore[import-untyped]  # no type information shipped
except (ImportError, RuntimeError):  # RuntimeError: the module loads, libseccomp.so.2 does not
    pyseccomp = None

# clone(2)'s CLONE_NEW* flags; a clone with any of them is refused like unshare(2).
CLONE_NEW_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
PERSONALITY_QUERY = 0xFFFFFFFF  # personality(0xffffffff) reads the persona without changing it
ARCHITECTURES = ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32")


@dataclass(frozen=True)
class Rule:
    """One system call the policy refuses. With `any_bits`, only when its first argument has one
    of those bits set; with `unless`, unless its first argument is exactly that value."""

    name: str
    any_bits: tuple[int, ...] = ()
    unless: int | None = None


@dataclass(frozen=True)
class Group:
    name: str
    reason: str
    rules: tuple[Rule, ...]

    @property
    def syscalls(self) -> tuple[str, ...]:
        return tuple(rule.name for rule in self.rules)


def _plain(names: str) -> tuple[Rule, ...]:
    return tuple(Rule(name) for name in names.split())


GROUPS: tuple[Group, ...] = (
    Group(
        "tracing",
        "reading or steering another process (its memory, registers, descriptors)",
        _plain("ptrace process_vm_readv process_vm_writev process_madvise pidfd_getfd kcmp"),
    ),
    Group(
        "mounts",
        "changing the filesystem tree: the sandbox's mounts are the backend's, fixed before the job",
        _plain("mount umount umount2 pivot_root chroot move_mount open_tree")
        + _plain("fsopen fsconfig fsmount fspick mount_setattr"),
    ),
    Group(
        "namespaces",
        "new namespaces: a user namespace gives its creator root's capabilities over kernel code meant for root only",
        (*_plain("unshare setns"), Rule("clone", any_bits=CLONE_NEW_FLAGS)),
    ),
    Group(
        "keyring",
        "the kernel's keyrings are per uid across the host, not per sandbox",
        _plain("keyctl add_key request_key"),
    ),
    Group("bpf", "eBPF programs run inside the kernel", _plain("bpf")),
    Group(
        "perf_event_open",
        "performance counters: a side channel on other processes, and a long record of kernel bugs",
        _plain("perf_event_open"),
    ),
    Group(
        "userfaultfd",
        "lets a program stall the kernel in the middle of a copy, the usual way to win a kernel race",
        _plain("userfaultfd"),
    ),
    Group(
        "io_uring",
        "a second system call interface, out of this filter's sight, and the source of many kernel exploits",
        _plain("io_uring_setup io_uring_enter io_uring_register"),
    ),
    Group(
        "personality",
        "changing the execution domain: turning address-space randomisation off, or executable data",
        (Rule("personality", unless=PERSONALITY_QUERY),),
    ),
    Group("kexec", "replacing or rebooting the running kernel", _plain("kexec_load kexec_file_load reboot")),
    Group(
        "modules",
        "loading or unloading kernel code",
        _plain("init_module finit_module delete_module create_module query_module get_kernel_syms"),
    ),
    Group(
        "file_handles",
        "opening a file by its handle skips the permissions of the directories above it",
        _plain("open_by_handle_at name_to_handle_at"),
    ),
    Group(
        "memory_policy",
        "moving pages between NUMA nodes, other processes' included",
        _plain("mbind set_mempolicy migrate_pages move_pages"),
    ),
    Group(
        "host",
        "the host's own settings and devices: clock, swap, accounting, quotas, kernel log, I/O ports",
        _plain("acct swapon swapoff syslog quotactl quotactl_fd vhangup fanotify_init")
        + _plain("settimeofday clock_settime clock_adjtime adjtimex stime sethostname setdomainname")
        + _plain("iopl ioperm vm86 vm86old lookup_dcookie nfsservctl uselib ustat sysfs _sysctl"),
    ),
)
# Refused with ENOSYS under every action (see the module's docstring).
ENOSYS_CALLS = ("clone3",)


@dataclass(frozen=True)
class Policy:
    """The resolved policy of one spool: what is refused, and how."""

    action: SeccompAction
    rules: tuple[Rule, ...]

    @property
    def denied(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(rule.name for rule in self.rules))


def _libseccomp() -> Any:
    if pyseccomp is None:
        raise SandboxError(
            "the stages' seccomp filter needs libseccomp (apt install libseccomp2) and the pyseccomp package"
        )
    return pyseccomp


def known_syscall(name: str) -> bool:
    """Whether libseccomp knows the name on some architecture a job can use."""
    seccomp = _libseccomp()
    arches = (seccomp.Arch.X86_64, seccomp.Arch.X86, seccomp.Arch.X32)
    return any(seccomp.resolve_syscall(arch, name) >= 0 for arch in arches)


def policy(config: SeccompConfig) -> Policy:
    """The spool's policy: the groups, less what `allow` names (a group or one of its calls: a
    group is named after its one call or differently from all of its calls, so a name is never
    both),
    plus the calls `deny` names. Unknown names are a configuration error that lists them all."""
    groups = {group.name: group for group in GROUPS}
    listed = {rule.name for group in GROUPS for rule in group.rules}
    unknown = [name for name in config.allow if name not in groups and name not in listed]
    if unknown:
        raise ConfigError(
            f"sandbox.seccomp.allow: not a group or call of the policy: {', '.join(unknown)} "
            f"(groups: {', '.join(groups)})"
        )
    unknown = [name for name in config.deny if not known_syscall(name)]
    if unknown:
        raise ConfigError(f"sandbox.seccomp.deny: unknown system calls: {', '.join(unknown)}")
    allowed = {call for name in config.allow for call in (groups[name].syscalls if name in groups else (name,))}
    rules = [rule for group in GROUPS for rule in group.rules if rule.name not in allowed]
    present = {rule.name for rule in rules}
    rules += [Rule(name) for name in dict.fromkeys(config.deny) if name not in present]
    return Policy(config.action, tuple(rules))


def _filter(pol: Policy) -> Any:
    seccomp = _libseccomp()
    deny = seccomp.KILL_PROCESS if pol.action == SeccompAction.KILL else seccomp.ERRNO(errno.EPERM)
    built = seccomp.SyscallFilter(seccomp.ALLOW)
    # A binary tree of the syscall numbers, not a list: the same decisions, but loading it (each
    # stage does) took 300 us, 70 us as a tree: the kernel runs the filter once per syscall number
    # and architecture when it is loaded, to cache which calls it always allows (issue 18).
    built.set_attr(seccomp.Attr.CTL_OPTIMIZE, 2)
    built.add_arch(seccomp.Arch.X86)
    built.add_arch(seccomp.Arch.X32)
    for name in ENOSYS_CALLS:
        built.add_rule(seccomp.ERRNO(errno.ENOSYS), name)
    for rule in pol.rules:
        if rule.any_bits:  # one rule per bit: libseccomp ANDs the comparisons within one rule
            for bit in rule.any_bits:
                built.add_rule(deny, rule.name, seccomp.Arg(0, seccomp.MASKED_EQ, bit, bit))
        elif rule.unless is not None:
            built.add_rule(deny, rule.name, seccomp.Arg(0, seccomp.NE, rule.unless))
        else:
            built.add_rule(deny, rule.name)
    return built


def _export(pol: Policy, method: str) -> bytes:
    built = _filter(pol)
    with tempfile.TemporaryFile() as out:
        try:
            getattr(built, method)(out)
        except OSError as exc:
            raise SandboxError(f"libseccomp could not compile the stages' filter: {exc}") from exc
        out.seek(0)
        return out.read()


def compile_bpf(pol: Policy) -> bytes:
    """The classic BPF program bubblewrap loads (`--seccomp FD`)."""
    return _export(pol, "export_bpf")


def describe(pol: Policy) -> str:
    """libseccomp's readable form of the same program (for debugging and the tests)."""
    return _export(pol, "export_pfc").decode()


def write_filter(directory: Path, pol: Policy) -> Path:
    """The compiled filter as a file under the state directory, written once and never changed
    (named by its digest), so that concurrent executors of a host agree without locks."""
    program = compile_bpf(pol)
    path = directory / f"filter-{hashlib.sha256(program).hexdigest()[:16]}.bpf"
    if not path.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        write_bytes(path, program)
        path.chmod(0o644)
    return path


def bwrap_args(fd: int | None) -> list[str]:
    """bubblewrap's option for a filter open on `fd` (inherited by bwrap); nothing without one."""
    return [] if fd is None else ["--seccomp", str(fd)]


def _docker_rule(names: Iterable[str], action: dict[str, Any], args: list[dict[str, int | str]]) -> dict[str, Any]:
    return {"names": sorted(names), **action, "args": args}


def docker_profile(pol: Policy) -> dict[str, Any]:
    """The same policy as a Docker seccomp profile (runc compiles it with libseccomp too)."""
    deny = (
        {"action": "SCMP_ACT_KILL_PROCESS"}
        if pol.action == SeccompAction.KILL
        else {"action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM}
    )
    rules = [_docker_rule(ENOSYS_CALLS, {"action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS}, [])]
    plain = [rule.name for rule in pol.rules if not rule.any_bits and rule.unless is None]
    rules.append(_docker_rule(plain, deny, []))
    for rule in pol.rules:
        for bit in rule.any_bits:
            rules.append(_docker_rule([rule.name], deny, [_arg("SCMP_CMP_MASKED_EQ", bit, bit)]))
        if rule.unless is not None:
            rules.append(_docker_rule([rule.name], deny, [_arg("SCMP_CMP_NE", rule.unless, 0)]))
    return {"defaultAction": "SCMP_ACT_ALLOW", "architectures": list(ARCHITECTURES), "syscalls": rules}


def _arg(op: str, value: int, value_two: int) -> dict[str, int | str]:
    return {"index": 0, "value": value, "valueTwo": value_two, "op": op}


def docker_security_opt(pol: Policy) -> str:
    """The `security_opt` entry that gives a container this policy."""
    return "seccomp=" + json.dumps(docker_profile(pol), separators=(",", ":"))
