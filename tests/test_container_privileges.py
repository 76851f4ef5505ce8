"""Why deploy/kubernetes runs the executor privileged, shown with a real container runtime.

The executor's bubblewrap makes a user and a pid namespace and mounts a new /proc in them. A
container runtime masks parts of the container's /proc (/proc/kcore, /proc/keys, ... covered by
other mounts), and the kernel refuses a new proc mount from inside a user namespace while any of
it is covered. So CAP_SYS_ADMIN with seccomp and AppArmor unconfined is not enough: the /proc must
be unmasked as well (Docker's `systempaths=unconfined`; Kubernetes' `procMount: Unmasked`, which
it admits only with `hostUsers: false`, or `privileged: true`). Docker's runc applies the same
masked paths as containerd's and CRI-O's default.

The host's bwrap runs inside the test image (bind-mounted with its libraries): the image's own
contents do not matter, only the runtime's confinement.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from docker_image.fixtures import docker_image  # noqa: F401 - a fixture

pytestmark = pytest.mark.slow

LIBS = Path("/lib/x86_64-linux-gnu")
# The namespaces and mounts of the executor's stage (runner/bwrap_layout.bwrap_argv).
SANDBOX = [
    "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--unshare-net",
    "--disable-userns", "--die-with-parent", "--new-session", "--hostname", "sandbox",
    "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
]  # fmt: skip
NARROW = ["--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined"]


def sandbox_in_container(image: str, options: list[str]) -> subprocess.CompletedProcess[str]:
    bwrap = shutil.which("bwrap")
    assert bwrap is not None and (LIBS / "ld-linux-x86-64.so.2").exists()
    argv = [
        "docker", "run", "--rm", "--network", "none", *options,
        "-v", f"{bwrap}:/opt/host/bwrap:ro", "-v", f"{LIBS}:/opt/host/lib:ro",
        "--entrypoint", "/opt/host/lib/ld-linux-x86-64.so.2", image,
        "--library-path", "/opt/host/lib", "/opt/host/bwrap", *SANDBOX, "/bin/sh", "-c", "echo in-sandbox $$",
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def test_cap_sys_admin_and_unconfined_profiles_are_not_enough(docker_image: str) -> None:  # noqa: F811
    done = sandbox_in_container(docker_image, NARROW)
    assert done.returncode != 0
    assert "Can't mount proc on /newroot/proc: Operation not permitted" in done.stderr


def test_an_unmasked_proc_is_what_the_sandbox_lacks(docker_image: str) -> None:  # noqa: F811
    done = sandbox_in_container(docker_image, [*NARROW, "--security-opt", "systempaths=unconfined"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["in-sandbox", "2"]  # in its own pid namespace, under bwrap (pid 1)
