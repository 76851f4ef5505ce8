"""The product's container image (deploy/container/build.sh), built and run with a real Docker engine.

- It builds offline from this host's Debian packages (no pull), and `docker run IMAGE --version`
  answers; it holds no spool, key or cache.
- An executor in it, started with deploy/kubernetes/executor.yaml's command line, environment and
  privileges, the spool a bind-mounted host directory (as the pod's volume) made by init-job.yaml's
  two containers run in the image, runs dropped submissions (a shell `echo`, a C compile and run)
  to `done`, as a slot uid, with the stdout bytes; the manifest's probe passes in it; SIGTERM to it
  as the container's pid 1 (as the kubelet sends) stops it cleanly.
- Every command line the manifests give a cutor-spool container resolves in the image and is
  accepted by the image's installed CLI.

A missing engine skips these locally and fails them in CI (conftest's `need`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, drop, make_submission, need, result, stage, wait_done, wait_until
from docker_image.fixtures import start_engine
from test_deploy_engines import KUBERNETES, containers, cutor_spool_invocations, documents

from cutor_spool import __version__

pytestmark = [pytest.mark.slow, pytest.mark.docker]

IMAGE = "cutor-spool:test"
BUILD = ROOT / "deploy" / "container" / "build.sh"
# Linux's capabilities by number (linux/capability.h), to name those this host cannot grant.
CAPABILITIES = [
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE",
]  # fmt: skip
HELLO_C = '#include <stdio.h>\n#include <unistd.h>\nint main(void){printf("hello from C as %d\\n", (int)getuid());}\n'


@pytest.fixture(scope="module")
def image() -> str:
    problem = start_engine()
    need(problem is None, problem or "")
    built = subprocess.run(["bash", str(BUILD), IMAGE], capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stderr[-3000:]
    return IMAGE


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr[-2000:]}"
    return done


def manifest_container(kind: str, name: str) -> dict[str, Any]:
    """The container `name` of the manifest whose kind is `kind` (deploy/kubernetes)."""
    for doc in documents():
        if doc["kind"] == kind:
            for container in containers(doc):
                if container["name"] == name:
                    return container
    raise AssertionError(f"no container {name} in a {kind}")


def privileges() -> list[str]:
    """executor.yaml's `privileged: true`. A host whose own bounding set lacks a capability (this
    test machine is itself a container without CAP_SYS_RESOURCE) cannot grant --privileged (runc:
    "unable to apply caps"); there the same privileges are spelled out: every capability it has,
    seccomp and AppArmor unconfined, an unmasked /proc, and a writable cgroup hierarchy (the host's,
    bound read-write: Docker mounts it read-only in an unprivileged container)."""
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    (line,) = [line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("CapBnd:")]
    bounding = int(line.split()[1], 16)
    lacking = [CAPABILITIES[bit] for bit in range(last + 1) if not bounding >> bit & 1 and bit < len(CAPABILITIES)]
    if not lacking:
        return ["--privileged"]
    return [
        "--cap-add", "ALL", *(f"--cap-drop={name}" for name in lacking),
        "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
        "--security-opt", "systempaths=unconfined", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    ]  # fmt: skip


def remove_container(name: str) -> None:
    """The container and its anonymous volume (the pod's emptyDir)."""
    subprocess.run(["docker", "rm", "-f", "-v", name], capture_output=True, timeout=120)


def remove_cgroups(container_id: str) -> None:
    """The cgroups the executor made under the container's own, where it saw the host's hierarchy
    (v1: Docker does not remove a container's cgroup that has children)."""
    for found in sorted(Path("/sys/fs/cgroup").glob(f"*/docker/{container_id}"), reverse=True):
        for directory in sorted((p for p in found.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            directory.rmdir()
        found.rmdir()


@pytest.fixture
def container_names() -> Iterator[list[str]]:
    """Names to give containers; each is removed afterwards, whatever happened."""
    names: list[str] = []
    yield names
    for name in names:
        found = subprocess.run(["docker", "inspect", "-f", "{{.Id}}", name], capture_output=True, text=True)
        remove_container(name)
        if found.returncode == 0:
            try:
                remove_cgroups(found.stdout.strip())
            except OSError:
                pass  # a v2 host or a cgroup still being torn down: nothing of the test's outcome


@pytest.fixture
def host_spool(tmp_path: Path) -> Iterator[Path]:
    """The directory bind-mounted as the pod's spool volume; removed afterwards, whatever happened
    (its files are root's, made in the container)."""
    path = tmp_path / "spool"
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


# -- (1) it builds and starts ----------------------------------------------------------------------
def test_the_image_answers_its_version_and_holds_no_spool_key_or_cache(image: str) -> None:
    done = docker("run", "--rm", "--network", "none", image, "--version")
    assert done.stdout == f"cutor-spool, version {__version__}\n"
    config = json.loads(docker("image", "inspect", image).stdout)[0]["Config"]
    assert config["Entrypoint"] == ["/usr/bin/tini", "--", "cutor-spool"]
    # Rebuilding with nothing changed is a no-op (the label's hash): CI pays the build once.
    again = subprocess.run(["bash", str(BUILD), image], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "is up to date" in again.stderr, again.stderr
    created = docker("create", image).stdout.strip()
    try:
        listing = subprocess.run(["sh", "-c", f"docker export {created} | tar -t"], capture_output=True, text=True)
    finally:
        docker("rm", created)
    names = listing.stdout.splitlines()
    assert "opt/cutor-spool/bin/cutor-spool" in names and "usr/bin/bwrap" in names
    forbidden = re.compile(r"(^|/)(spool\.yaml|\.cache|\.git|nix|[^/]*\.key|id_[a-z0-9]+|\.netrc|\.pypirc)(/|$)")
    assert [n for n in names if forbidden.search(n) and not n.startswith("usr/")] == []
    assert not any(n.startswith(("srv/", "root/")) and n not in ("srv/", "root/") for n in names)


# -- (2) an executor in it, as deploy/kubernetes runs it -------------------------------------------
def run_init_job(image: str, spool: Path, tmp_path: Path) -> None:
    """init-job.yaml's init container and container, their command lines as they are there."""
    config_dir = tmp_path / "config"  # the ConfigMap, mounted read-only at /etc/cutor-spool
    config_dir.mkdir()
    (config,) = [d for d in documents() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "cutor-spool-config"]
    for key, text in config["data"].items():
        (config_dir / key).write_text(text)
    for name in ("config", "init"):
        argv = manifest_container("Job", name)["command"]
        docker(
            "run", "--rm", "--network", "none", "-v", f"{spool}:/srv/spool",
            "-v", f"{config_dir}:/etc/cutor-spool:ro", "--entrypoint", argv[0], image, *argv[1:],
        )  # fmt: skip
    assert yaml.safe_load((spool / "spool.yaml").read_text())["lease_timeout"] == "60s"


def test_an_executor_in_the_image_runs_submissions_as_a_slot_uid(
    image: str, host_spool: Path, tmp_path: Path, container_names: list[str]
) -> None:
    run_init_job(image, host_spool, tmp_path)
    clients = tmp_path / "clients"
    drop(host_spool, make_submission(clients, "echo", "run: echo hi\n"), "echo")
    c_yaml = "compile: gcc -O2 -Wall -o hello hello.c\nrun: ./hello\n"
    drop(host_spool, make_submission(clients, "c", c_yaml, {"hello.c": HELLO_C}), "c")

    spec = manifest_container("Deployment", "executor")
    argv = [*spec["command"], *spec.get("args", [])]
    env = [f"--env={e['name']}={e['value']}" for e in spec["env"]]
    mounts = {m["name"]: m["mountPath"] for m in spec["volumeMounts"]}
    name = f"cutor-image-{uuid.uuid4().hex[:8]}"
    container_names.append(name)
    docker(
        "run", "--detach", "--name", name, "--network", "none", *privileges(), *env,
        "-v", f"{host_spool}:{mounts['spool']}", "-v", mounts["state"],  # the PVC; the emptyDir
        "--entrypoint", argv[0], image, *argv[1:],
    )  # fmt: skip

    def logs() -> str:
        return docker("logs", name, check=False).stderr[-3000:]

    try:
        wait_done(host_spool, ["echo", "c"], timeout=120)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the executor's log:\n{logs()}") from None
    echo, c = result(host_spool, "echo"), result(host_spool, "c")
    assert (echo["state"], echo["outcome"]) == ("done", "ok"), (echo, logs())
    assert (c["state"], c["outcome"]) == ("done", "ok"), (c, logs())
    assert stage(host_spool, "echo", "run")["stdout"] == "hi\n"
    uid = c["sandbox_uid"]
    assert uid >= 1000 and echo["sandbox_uid"] >= 1000
    assert stage(host_spool, "c", "run")["stdout"] == f"hello from C as {uid}\n"
    assert c["stages"]["compile"]["status"] == "ok"

    # The manifest's probes, run in the container as the kubelet runs them.
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        checked = docker("exec", name, *spec[probe]["exec"]["command"], check=False)
        assert checked.returncode == 0, (probe, checked.stdout, checked.stderr)
    # The status page's liveness probe reads status.json, which the executor regenerates.
    wait_until((host_spool / "status" / "status.json").exists, 30, "status/status.json")
    page_probe = manifest_container("Deployment", "status-page")["livenessProbe"]["exec"]["command"]
    assert docker("exec", name, *page_probe, check=False).returncode == 0

    # SIGTERM to pid 1 (the executor itself, as `command:` makes it in a pod): it stops in its grace.
    docker("stop", "--time", "45", name, timeout=90)
    state = json.loads(docker("inspect", name).stdout)[0]["State"]
    assert (state["ExitCode"], state["OOMKilled"]) == (0, False), logs()


def test_the_status_page_runs_in_the_image_as_its_manifest_confines_it(
    image: str, host_spool: Path, tmp_path: Path, container_names: list[str]
) -> None:
    """status-page.yaml's container: a read-only root, every capability dropped but the two that
    read every result, no privilege escalation, /tmp an emptyDir."""
    run_init_job(image, host_spool, tmp_path)
    (host_spool / "status" / "status.json").unlink(missing_ok=True)
    spec = manifest_container("Deployment", "status-page")
    context = spec["securityContext"]
    assert context["readOnlyRootFilesystem"] and context["capabilities"]["drop"] == ["ALL"]
    assert context["allowPrivilegeEscalation"] is False
    confinement = [
        "--read-only", "--user", str(context["runAsUser"]), "--cap-drop", "ALL",
        *(f"--cap-add={cap}" for cap in context["capabilities"]["add"]), "--security-opt", "no-new-privileges",
    ]  # fmt: skip
    mounts = {m["name"]: m["mountPath"] for m in spec["volumeMounts"]}
    env = [f"--env={e['name']}={e['value']}" for e in spec["env"]]
    name = f"cutor-image-{uuid.uuid4().hex[:8]}"
    container_names.append(name)
    argv = spec["command"]
    docker(
        "run", "--detach", "--name", name, "--network", "none", *confinement, *env,
        "-v", f"{host_spool}:{mounts['spool']}", "-v", mounts["tmp"], "--entrypoint", argv[0], image, *argv[1:],
    )  # fmt: skip
    status = host_spool / "status" / "status.json"
    wait_until(status.exists, 60, "the status page writes status/status.json")
    assert json.loads(status.read_text())["queues"] is not None
    probe = docker("exec", name, *spec["livenessProbe"]["exec"]["command"], check=False)
    assert probe.returncode == 0, probe.stderr
    docker("stop", "--time", "30", name, timeout=60)
    assert json.loads(docker("inspect", name).stdout)[0]["State"]["ExitCode"] == 0


# -- (3) the manifests' command lines against the image ----------------------------------------------
CHECK_IN_IMAGE = """
import json, shutil, subprocess, sys
failures = []
for argv in json.loads(sys.argv[1]):
    if shutil.which(argv[0]) is None:
        failures.append(f"{argv[0]}: not on PATH")
for argv in json.loads(sys.argv[2]):
    done = subprocess.run([*argv, "--help"], capture_output=True, text=True)
    if done.returncode != 0 or not done.stdout.startswith("Usage: cutor-spool "):
        failures.append(f"{argv}: {done.returncode} {done.stderr.strip()}")
print(json.dumps(failures))
"""


def test_every_manifest_command_line_runs_in_the_image(image: str) -> None:
    lines = []
    for path in sorted(KUBERNETES.glob("*.yaml")) + sorted((KUBERNETES / "alternatives").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            for container in containers(doc or {}):
                if container["image"].split(":")[0] != "cutor-spool":
                    continue
                lines.append([*container.get("command", []), *container.get("args", [])])
                lines += [container[p]["exec"]["command"] for p in ("startupProbe", "livenessProbe", "readinessProbe")
                          if "exec" in container.get(p, {})]  # fmt: skip
    # `command:` replaces the image's entrypoint: the manifests rely on their argv[0] being on the
    # image's PATH (cutor-spool, sh), and on the CLI installed there accepting their options.
    assert {argv[0] for argv in lines} == {"cutor-spool", "sh"}
    tools = {tuple(argv[:1]) for argv in lines} | {("test",), ("cp",), ("date",), ("stat",)}
    invocations = [inv for argv in lines for inv in cutor_spool_invocations(argv)]
    assert len(invocations) >= 8
    done = docker(
        "run", "--rm", "--network", "none", "--entrypoint", "/opt/cutor-spool/bin/python", image,
        "-c", CHECK_IN_IMAGE, json.dumps(sorted(list(t) for t in tools)), json.dumps(invocations),
    )  # fmt: skip
    assert json.loads(done.stdout) == []
    # And the check can fail: an option the CLI does not have is refused in the image too.
    drifted = docker(
        "run", "--rm", "--network", "none", "--entrypoint", "/opt/cutor-spool/bin/python", image,
        "-c", CHECK_IN_IMAGE, "[]", json.dumps([["cutor-spool", "executor", "--grace-period", "30"]]),
    )  # fmt: skip
    assert "No such option '--grace-period'" in json.loads(drifted.stdout)[0]
