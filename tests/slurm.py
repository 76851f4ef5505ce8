"""A real single-node Slurm on this machine, for tests/test_slurm.py and benchmarks/slurm.py.

Debian's `slurm-wlm` and `munge` (scripts/setup.sh --tests): a munged with a key of its own on a
socket of its own, a slurmctld and a slurmd in the foreground (`-D`) on loopback ports that were
free a moment ago, all under one temporary directory and reached by clients through `SLURM_CONF`.
Nothing of the system's (/etc/slurm, /etc/munge, the default munge socket) is read or changed.
The conf is the one docs/deploy.md ("Slurm") asks of a judge cluster: jobs run as root, and
Slurm leaves cgroups to the executor (`ProctrackType=proctrack/pgid`, `TaskPlugin=task/none`).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch")
NODE = "localhost"
PARTITION = "cutor"


def have_slurm() -> bool:
    return all(shutil.which(name) or Path("/usr/sbin", name).exists() for name in DAEMONS)


def _free_ports(count: int) -> list[int]:
    """Consecutive-free-ish loopback ports the kernel just gave out (slurmctld and slurmd bind
    them a moment later; a clash shows as a daemon that does not start, with its log)."""
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _kill(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def _memory_mb() -> int:
    with open("/proc/meminfo", encoding="ascii") as fh:
        kib = int(next(line for line in fh if line.startswith("MemTotal:")).split()[1])
    return kib // 1024 - 512  # what slurmd sees, less a margin, else it drains the node


CONF = """\
ClusterName=cutortest
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CryptoType=crypto/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/slurmd
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType={proctrack}
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MinJobAge=300
KillWait=5
SchedulerParameters=sched_interval=1
{overrides}NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName={partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
"""


class Slurm:
    """A running single-node cluster: `env` is what its clients need (SLURM_CONF)."""

    def __init__(self, root: Path, proctrack: str = "proctrack/pgid", cpus: int | None = None) -> None:
        self.root = root
        self.proctrack = proctrack
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        # More CPUs than the machine has (the benchmark's 4 pilots of one CPU on 2 cores): slurmd
        # is told to trust the conf, else it drains the node.
        self.cpus = cpus or os.cpu_count() or 1
        self.procs: list[subprocess.Popen[bytes]] = []

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> None:
        for sub in ("state", "slurmd", "munge"):
            (self.root / sub).mkdir(mode=0o700)
        ctld_port, slurmd_port = _free_ports(2)
        munge_socket = self.root / "munge" / "munge.socket"
        self.conf.write_text(
            CONF.format(
                node=NODE,
                partition=PARTITION,
                root=self.root,
                ctld_port=ctld_port,
                slurmd_port=slurmd_port,
                munge_socket=munge_socket,
                cpus=self.cpus,
                memory=_memory_mb(),
                proctrack=self.proctrack,
                overrides="SlurmdParameters=config_overrides\n" if self.cpus > (os.cpu_count() or 1) else "",
            )
        )
        self._start_munge(munge_socket)
        self._daemon("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._daemon("slurmd", ["slurmd", "-D", "-N", NODE, "-f", str(self.conf)])
        self.wait_idle(60)

    def _start_munge(self, sock: Path) -> None:
        key = self.root / "munge" / "munge.key"
        with open(key, "wb", opener=lambda p, f: os.open(p, f, 0o600)) as fh:
            fh.write(os.urandom(1024))
        munge = self.root / "munge"
        subprocess.run(
            [
                "munged",
                "--force",
                f"--key-file={key}",
                f"--socket={sock}",
                f"--pid-file={munge}/munged.pid",
                f"--log-file={munge}/munged.log",
                f"--seed-file={munge}/munged.seed",
            ],
            check=True,
            capture_output=True,
        )
        self._wait(sock.exists, 20, "munged's socket")

    def _daemon(self, name: str, argv: list[str]) -> None:
        log = open(self.root / f"{name}.out", "wb")  # noqa: SIM115 - closed when the process is
        self.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env))
        log.close()

    def stop(self) -> None:
        for job in self.squeue():  # nothing of a test outlives it
            subprocess.run(["scancel", "--full", job], env=self.env, check=False, capture_output=True)
        # A job's slurmstepd finishes a moment after squeue forgets the job; one whose slurmd is
        # gone retries forever. Let them end first (bounded), then stop the daemons.
        deadline = time.monotonic() + 30
        while self._stepds() and time.monotonic() < deadline:
            time.sleep(0.1)
        for proc in reversed(self.procs):
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in self._stepds():  # still there: stuck without their slurmd
            _kill(pid, signal.SIGKILL)
        pid_file = self.root / "munge" / "munged.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().strip() or 0)
            if pid > 0 and _kill(pid, signal.SIGTERM):  # it writes its seed file as it exits
                self._gone(pid, 10)

    def _stepds(self) -> list[int]:
        """This cluster's slurmstepd processes (their environment names its conf)."""
        marker = f"SLURM_CONF={self.conf}".encode()
        found = []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                if (proc / "comm").read_text().startswith("slurmstepd") and marker in (
                    proc / "environ"
                ).read_bytes().split(b"\0"):
                    found.append(int(proc.name))
            except OSError:
                continue
        return found

    @staticmethod
    def _gone(pid: int, timeout: float) -> None:
        """Waits until `pid` has exited (a zombie has: nobody may reap a daemon's)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    return
            except OSError:
                return
            time.sleep(0.05)

    def logs(self) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "slurmctld.out", "slurmd.out", "munge/munged.log"):
            path = self.root / name
            if path.exists():
                parts.append(f"--- {name}\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(parts)

    # -- what clients see ----------------------------------------------------------------------
    def run(self, *argv: str) -> str:
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    def node_state(self) -> str:
        try:
            return self.run("sinfo", "--noheader", "--nodes", NODE, "--format", "%T").strip()
        except RuntimeError:
            return ""

    def squeue(self) -> list[str]:
        """Ids of the jobs still queued or running (array tasks as JOB_TASK)."""
        try:
            return self.run("squeue", "--noheader", "--array", "--format", "%i").split()
        except RuntimeError:
            return []

    def job_states(self, job_id: str) -> dict[str, tuple[str, str]]:
        """Each task of an array job: its JobState and ExitCode, from `scontrol show job` (no
        accounting storage here, so no sacct; finished jobs stay listed for MinJobAge)."""
        text = self.run("scontrol", "show", "job", job_id, "--oneliner")
        states = {}
        for line in text.splitlines():
            fields = dict(re.findall(r"(\w+)=(\S*)", line))
            task = fields.get("ArrayTaskId", "")
            states[f"{fields['ArrayJobId']}_{task}" if task else fields["JobId"]] = (
                fields["JobState"],
                fields["ExitCode"],
            )
        return states

    def wait_idle(self, timeout: float) -> None:
        self._wait(lambda: self.node_state() == "idle", timeout, f"node {NODE} idle")

    def _wait(self, condition: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():  # type: ignore[operator]
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{proc.args[0]} exited {proc.returncode}:\n{self.logs()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"not after {timeout}s: {what}\n{self.logs()}")
            time.sleep(0.1)


def cluster(proctrack: str = "proctrack/pgid", cpus: int | None = None) -> Iterator[Slurm]:
    """A cluster for the life of the generator: the fixture's and the benchmark's."""
    root = Path(tempfile.mkdtemp(prefix="cutor-slurm-", dir="/run"))
    root.chmod(0o755)
    slurm = Slurm(root, proctrack, cpus)
    try:
        slurm.start()
        yield slurm
    finally:
        slurm.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm() -> Iterator[Slurm]:
    from conftest import need

    need(have_slurm(), "Slurm and munge are not installed (scripts/setup.sh --tests)")
    need(os.geteuid() == 0, "the pilots are root's jobs (SlurmUser=root): root")
    yield from cluster()
