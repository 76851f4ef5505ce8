"""The stages' system call policy (runner/seccomp.py): the list as data, and each denied call
failing inside a real stage on both backends, with EPERM or by killing the stage.

The probe (tests/seccomp/probe.c, built static on the host so one binary serves both backends)
is only ever run inside a sandbox.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, need, unmount_under
from docker_image.fixtures import docker_image  # noqa: F401 - a fixture

from cutor_spool.config import DEFAULT_LIMITS, SeccompAction, SeccompConfig, SpoolConfig, load_config
from cutor_spool.errors import ConfigError
from cutor_spool.limits import Limits
from cutor_spool.runner import seccomp
from cutor_spool.runner.bwrap import BubblewrapBackend
from cutor_spool.runner.bwrap_layout import BwrapLayout, bwrap_argv
from cutor_spool.runner.docker import DockerBackend
from cutor_spool.runner.slots import DEFAULT_STATE_DIR, SlotPool
from cutor_spool.runner.stage import StageOutput, StageSpec, StageStatus, classify

LIMITS = replace(Limits.from_spec(DEFAULT_LIMITS), cpu_time=10.0, wall_time=30.0, memory=512 * 2**20)
PROBE_SOURCE = ROOT / "tests" / "seccomp" / "probe.c"
# What the probe calls (one or more calls of each group the issue names, and a few more).
PROBED = [
    "ptrace",
    "process_vm_readv",
    "mount",
    "umount2",
    "pivot_root",
    "unshare",
    "setns",
    "clone",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "personality",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "open_by_handle_at",
    "mbind",
    "syslog",
    "reboot",
]
ORDINARY = """
set -e
printf '#include <stdio.h>\\n#include <pthread.h>\\nstatic void *f(void *a) { return a; }\\n'\\
'int main(void) { pthread_t t; pthread_create(&t, 0, f, 0); pthread_join(t, 0); puts("c ok"); return 0; }\\n' > t.c
gcc -O2 -pthread -o t t.c && ./t
python3 -c '
import socket, subprocess, threading
t = threading.Thread(target=print, args=("thread ok",)); t.start(); t.join()
print(subprocess.run(["sh", "-c", "echo $((6 * 7))"], capture_output=True, text=True).stdout.strip())
socket.socketpair()
print("python ok")'
"""
DOCKER_UID_BASE = 63400  # away from the other suites' slots (see test_docker_backend.py)


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need(shutil.which("gcc") is not None, "gcc is not installed")
    out = tmp_path_factory.mktemp("probe") / "probe"
    subprocess.run(["gcc", "-O1", "-static", "-o", str(out), str(PROBE_SOURCE)], check=True)
    return out


def parse(output: StageOutput) -> dict[str, tuple[int, int]]:
    lines = output.stdout.decode().split("\n")
    return {name: (int(result), int(err)) for name, result, err in (line.split() for line in lines if line)}


def place(probe: Path, workdir: Path, uid: int, gid: int) -> None:
    shutil.copy(probe, workdir / "probe")
    os.chown(workdir / "probe", uid, gid)


def check_errno(output: StageOutput) -> None:
    assert output.status == StageStatus.OK, output
    seen = parse(output)
    assert set(PROBED) <= set(seen), seen
    refused = {name: seen[name] for name in PROBED if seen[name] != (-1, errno.EPERM)}
    assert not refused, f"not refused with EPERM: {refused}"
    assert seen["clone3"] == (-1, errno.ENOSYS)  # glibc then falls back to clone
    assert seen["personality-query"][0] >= 0  # reading the persona is allowed


# --- the policy as data --------------------------------------------------------------------------


def test_the_policy_lists_each_group_the_issue_names_with_a_reason() -> None:
    pol = seccomp.policy(SeccompConfig())
    for name in PROBED:
        assert name in pol.denied, name
    for call in ("kexec_load", "init_module", "finit_module", "io_uring_enter", "umount2", "add_key"):
        assert call in pol.denied
    assert all(group.reason and group.rules for group in seccomp.GROUPS)
    assert "clone3" not in pol.denied  # ENOSYS under every action instead
    assert not {"read", "write", "execve", "openat", "mmap", "socket", "seccomp"} & set(pol.denied)


def test_each_name_resolves_and_the_compiled_program_checks_it() -> None:
    pol = seccomp.policy(SeccompConfig())
    text = seccomp.describe(pol)
    for name in pol.denied:
        assert seccomp.known_syscall(name), name
    for name in ("ptrace", "keyctl", "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "mount"):
        assert f'"{name}"' in text, name
    for arch in ("x86_64", "x86", "x32"):  # every ABI an x86-64 process can call through
        assert f"filter for arch {arch} " in text
    program = seccomp.compile_bpf(pol)
    assert program and len(program) % 8 == 0  # struct sock_filter is 8 bytes
    kill = seccomp.describe(seccomp.policy(SeccompConfig(action=SeccompAction.KILL)))
    assert "KILL_PROCESS" in kill and "ERRNO(1)" not in kill and "ERRNO(38)" in kill


def test_allow_and_deny_change_the_list_and_unknown_names_are_errors_listing_them() -> None:
    pol = seccomp.policy(SeccompConfig(allow=["ptrace", "io_uring"], deny=["socket", "chmod"]))
    assert "ptrace" not in pol.denied and "process_vm_readv" in pol.denied  # a call, not its group
    assert not {"io_uring_setup", "io_uring_enter", "io_uring_register"} & set(pol.denied)  # a whole group
    assert {"socket", "chmod"} <= set(pol.denied)
    with pytest.raises(ConfigError) as caught:
        seccomp.policy(SeccompConfig(allow=["tracing", "nosuchgroup", "read"]))
    assert "nosuchgroup" in str(caught.value) and "read" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        seccomp.policy(SeccompConfig(deny=["frobnicate", "socket", "unfrobnicate"]))
    assert "frobnicate, unfrobnicate" in str(caught.value)


def test_spool_yaml_section(tmp_path: Path) -> None:
    (tmp_path / "spool.yaml").write_text("sandbox:\n  seccomp: {action: kill, allow: [ptrace]}\n")
    assert load_config(tmp_path).sandbox.seccomp == SeccompConfig(action=SeccompAction.KILL, allow=["ptrace"])
    (tmp_path / "spool.yaml").write_text("sandbox:\n  seccomp: {action: trap}\n")
    with pytest.raises(ConfigError, match=r"sandbox\.seccomp\.action"):
        load_config(tmp_path)


def test_the_docker_profile_is_the_same_policy() -> None:
    pol = seccomp.policy(SeccompConfig())
    opt = seccomp.docker_security_opt(pol)
    assert opt.startswith("seccomp=")
    profile = json.loads(opt.removeprefix("seccomp="))
    assert set(profile["architectures"]) == {"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"}
    named = {name for rule in profile["syscalls"] for name in rule["names"]}
    assert named == set(pol.denied) | {"clone3"}
    clone = [rule for rule in profile["syscalls"] if rule["names"] == ["clone"]]
    assert len(clone) == len(seccomp.CLONE_NEW_FLAGS)
    assert all(rule["args"][0]["op"] == "SCMP_CMP_MASKED_EQ" for rule in clone)


def test_a_stage_killed_by_sigsys_is_a_security_violation() -> None:
    for returncode in (-signal.SIGSYS, 128 + signal.SIGSYS):  # the engine's way, and tini's
        status, _, sig = classify(
            started=True, killed_for=None, returncode=returncode, oom_kills=0, cpu_time=0.0, limits=LIMITS
        )
        assert (status, sig) == (StageStatus.SECURITY_VIOLATION, signal.SIGSYS)


def test_bwrap_reads_the_filter_from_the_descriptor_it_inherits() -> None:
    layout = BwrapLayout(init="/init", system=(), tmp_size=1 << 20, etc=Path("/e"), etc_net=Path("/e"))
    args: dict[str, Any] = {"slot_root": Path("/s"), "workdir": "work", "network": False, "ro_binds": ()}
    argv = bwrap_argv(layout, **args, env={}, status_fd=5, command=("true",), seccomp_fd=7)
    at = argv.index("--seccomp")
    assert argv[at + 1] == "7" and at < argv.index("--")
    assert "--seccomp" not in bwrap_argv(layout, **args, env={}, status_fd=5, command=("true",))


# --- bubblewrap ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pool() -> SlotPool:
    return SlotPool(uid_base=61000, count=64, work_size=128 << 20)


def bwrap_run(pool: SlotPool, probe: Path, config: SeccompConfig, scripts: list[str]) -> list[StageOutput]:
    backend = BubblewrapBackend(
        state_dir=DEFAULT_STATE_DIR, uid_base=61000, slots=64, tmp_size=32 << 20, seccomp=config
    )
    slot = pool.acquire()
    try:
        box = backend.open(slot, "seccomp")
        place(probe, box.workdir, slot.uid, slot.gid)
        outputs = [box.run(StageSpec("run", ("/bin/sh", "-c", script), LIMITS)) for script in scripts]
        box.close()
        return outputs
    finally:
        pool.release(slot)


def test_bubblewrap_each_denied_call_fails_with_eperm(pool: SlotPool, probe: Path) -> None:
    (output,) = bwrap_run(pool, probe, SeccompConfig(), ["./probe all"])
    check_errno(output)


def test_bubblewrap_without_the_filter_the_same_calls_reach_the_kernel(pool: SlotPool, probe: Path) -> None:
    (output,) = bwrap_run(pool, probe, SeccompConfig(enabled=False), ["./probe all"])
    seen = parse(output)
    assert seen["ptrace"] == (-1, errno.ESRCH) and seen["setns"] == (-1, errno.EBADF), seen
    assert seen["personality"][0] >= 0 and seen["io_uring_setup"][1] != errno.EPERM, seen


def test_bubblewrap_kill_ends_the_stage_security_violation(pool: SlotPool, probe: Path) -> None:
    # `exec`: the probe's own end is the stage's (a shell would report its SIGSYS as exit 159)
    scripts = [f"exec ./probe {n}" for n in PROBED]
    outputs = bwrap_run(pool, probe, SeccompConfig(action=SeccompAction.KILL), scripts)
    for name, output in zip(PROBED, outputs, strict=True):
        assert output.status == StageStatus.SECURITY_VIOLATION, (name, output)
        assert output.signal == signal.SIGSYS and "seccomp" in (output.message or "")
        assert f"{name} " not in output.stdout.decode()  # it never returned


def test_bubblewrap_ordinary_programs_never_meet_the_filter(pool: SlotPool, probe: Path) -> None:
    outputs = bwrap_run(pool, probe, SeccompConfig(action=SeccompAction.KILL), [ORDINARY, "exec ./probe none"])
    assert all(out.status == StageStatus.OK for out in outputs), outputs
    assert outputs[0].stdout.decode().split() == ["c", "ok", "thread", "ok", "42", "python", "ok"]


# --- Docker --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docker_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    state = tmp_path_factory.mktemp("docker-seccomp")
    yield state
    unmount_under(state)


def docker_run(image: str, state: Path, probe: Path, config: SeccompConfig, scripts: list[str]) -> list[StageOutput]:
    settings: dict[str, Any] = {
        "docker": {"image": image},
        "sandbox": {"uid_base": DOCKER_UID_BASE, "slots": 4, "work_size": "128MiB", "tmp_size": "32MiB"},
    }
    settings["sandbox"]["seccomp"] = config.model_dump(mode="json")
    backend = DockerBackend(SpoolConfig.model_validate(settings), state)
    pool = SlotPool(uid_base=DOCKER_UID_BASE, count=4, work_size=128 * 2**20, state_dir=state)
    slot = pool.acquire()
    try:
        box = backend.open(slot, "seccomp")
        try:
            place(probe, box.workdir, slot.uid, slot.gid)
            return [box.run(StageSpec("run", ("/bin/sh", "-c", script), LIMITS)) for script in scripts]
        finally:
            box.close()
    finally:
        pool.release(slot)
        backend.close()


@pytest.mark.docker
def test_docker_each_denied_call_fails_with_eperm(docker_image: str, docker_state: Path, probe: Path) -> None:  # noqa: F811
    (output,) = docker_run(docker_image, docker_state, probe, SeccompConfig(), ["./probe all"])
    check_errno(output)


@pytest.mark.docker
def test_docker_kill_ends_the_stage_security_violation(docker_image: str, docker_state: Path, probe: Path) -> None:  # noqa: F811
    scripts = [f"exec ./probe {n}" for n in PROBED] + [ORDINARY, "exec ./probe none"]
    outputs = docker_run(docker_image, docker_state, probe, SeccompConfig(action=SeccompAction.KILL), scripts)
    for name, output in zip(PROBED, outputs, strict=False):
        assert output.status == StageStatus.SECURITY_VIOLATION, (name, output)
        assert output.signal == signal.SIGSYS
    ordinary, query = outputs[len(PROBED) :]
    assert ordinary.status == StageStatus.OK and query.status == StageStatus.OK, (ordinary, query)
    assert ordinary.stdout.decode().split() == ["c", "ok", "thread", "ok", "42", "python", "ok"]


def test_the_readme_lists_every_group() -> None:
    readme = (ROOT / "README.md").read_text()
    for group in seccomp.GROUPS:
        assert f"| `{group.name}` |" in readme, group.name
