"""The systemd unit templates that `cutor-spool systemd` prints: verified by systemd itself
(`systemd-analyze verify`, which loads them as the manager would, without starting anything), and
checked against the workers' command lines and their shutdown (grace, kill mode)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from conftest import CLI, need

from cutor_spool.cli import cli as cli_group

UNITS = (
    "cutor-spool-executor@.service",
    "cutor-spool-builder@.service",
    "cutor-spool-gateway.service",
    "cutor-spool.target",
)
EXECUTABLE = str(Path(sys.executable).with_name("cutor-spool"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)


def write_units(directory: Path, env_file: Path, executable: str = EXECUTABLE) -> dict[str, Path]:
    proc = run("systemd", "--output", str(directory), "--bin", executable, "--env-file", str(env_file))
    assert proc.returncode == 0, proc.stderr
    return {name: directory / name for name in UNITS}


def keys(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def verify(directory: Path, *units: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(directory / u) for u in units)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
    )


def test_prints_every_file_or_one_by_name() -> None:
    everything = run("systemd")
    assert everything.returncode == 0, everything.stderr
    for name in (*UNITS, "cutor-spool.env"):
        assert f"### {name}" in everything.stdout
    one = run("systemd", "cutor-spool-executor@.service")
    assert one.returncode == 0 and one.stdout.startswith("# cutor-spool executor")
    assert "###" not in one.stdout and "[Install]" in one.stdout
    assert run("systemd", "no-such.service").returncode == 2


def test_output_writes_the_units_and_never_overwrites_the_environment_file(tmp_path: Path) -> None:
    env_file = tmp_path / "etc" / "cutor-spool.env"
    paths = write_units(tmp_path / "units", env_file)
    assert all(p.is_file() for p in paths.values())
    assert "CUTOR_SPOOL=/var/spool/cutor-spool" in env_file.read_text()
    env_file.write_text("CUTOR_SPOOL=/srv/my-spool\n")
    proc = run("systemd", "--output", str(tmp_path / "units"), "--env-file", str(env_file))
    assert proc.returncode == 0 and "kept" in proc.stdout
    assert env_file.read_text() == "CUTOR_SPOOL=/srv/my-spool\n"
    for path in paths.values():
        assert f"EnvironmentFile=-{env_file}" in path.read_text() or path.suffix == ".target"


def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    need(shutil.which("systemd-analyze") is not None, "systemd-analyze is not installed")
    units = tmp_path / "units"
    write_units(units, tmp_path / "cutor-spool.env")
    for kind in ("executor", "builder"):  # instances, as systemctl enable makes them
        (units / f"cutor-spool-{kind}@1.service").symlink_to(f"cutor-spool-{kind}@.service")
    proc = verify(
        units,
        "cutor-spool-executor@1.service",
        "cutor-spool-builder@1.service",
        "cutor-spool-gateway.service",
        "cutor-spool.target",
    )
    # systemd-analyze exits 0 on a mere warning (an unknown key, a bad value): any output is a failure.
    assert (proc.returncode, proc.stderr, proc.stdout) == (0, "", "")

    # ... and it does report what is wrong here (so the check above can fail).
    broken = units / "broken@.service"
    broken.write_text((units / "cutor-spool-executor@.service").read_text().replace("KillMode=mixed", "KillMode=bogus"))
    (units / "broken@1.service").symlink_to("broken@.service")
    assert "kill mode" in verify(units, "broken@1.service").stderr


def test_an_executable_path_with_spaces_is_quoted(tmp_path: Path) -> None:
    need(shutil.which("systemd-analyze") is not None, "systemd-analyze is not installed")
    odd = tmp_path / "my tools" / "cutor-spool"
    odd.parent.mkdir()
    odd.symlink_to(EXECUTABLE)
    units = tmp_path / "units"
    write_units(units, tmp_path / "env", executable=str(odd))
    assert f'ExecStart="{odd}" --spool' in (units / "cutor-spool-executor@.service").read_text()
    (units / "cutor-spool-executor@1.service").symlink_to("cutor-spool-executor@.service")
    proc = verify(units, "cutor-spool-executor@1.service")
    assert (proc.returncode, proc.stderr) == (0, "")


def _options(command: click.Command) -> set[str]:
    return {opt for param in command.params for opt in getattr(param, "opts", [])}


@pytest.mark.parametrize("kind", ["executor", "builder"])
def test_units_match_the_workers_command_line_and_shutdown(tmp_path: Path, kind: str) -> None:
    units = write_units(tmp_path / "units", Path("/etc/cutor-spool/cutor-spool.env"))
    unit = keys(units[f"cutor-spool-{kind}@.service"])
    argv = shlex.split(unit["ExecStart"])
    assert argv[:3] == [EXECUTABLE, "--spool", "${CUTOR_SPOOL}"]
    assert argv[3] == kind
    options = _options(cli_group.commands[kind])  # every option the unit passes exists
    assert {a for a in argv[4:] if a.startswith("--")} <= options
    assert argv[argv.index("--host") + 1] == "%H"
    # Stop: SIGTERM to the worker alone, which finishes or hands back its work within --grace;
    # systemd waits longer than that before SIGKILL.
    assert (unit["KillMode"], unit["KillSignal"]) == ("mixed", "SIGTERM")
    grace = float(argv[argv.index("--grace") + 1]) if "--grace" in argv else 30.0
    assert float(unit["TimeoutStopSec"].rstrip("s")) >= grace + 10
    assert unit["Delegate"] == "yes" and unit["OOMPolicy"] == "continue"
    assert unit["User"] == "root" and unit["RestartPreventExitStatus"] == "78"
    assert unit["EnvironmentFile"] == "-/etc/cutor-spool/cutor-spool.env"
    assert unit["WantedBy"] == "cutor-spool.target" and unit["PartOf"] == "cutor-spool.target"


def test_the_gateway_unit_matches_its_command_line(tmp_path: Path) -> None:
    units = write_units(tmp_path / "units", Path("/etc/cutor-spool/cutor-spool.env"))
    unit = keys(units["cutor-spool-gateway.service"])
    argv = shlex.split(unit["ExecStart"])
    assert argv[:4] == [EXECUTABLE, "--spool", "${CUTOR_SPOOL}", "gateway"]
    assert {a for a in argv[4:] if a.startswith("--")} <= _options(cli_group.commands["gateway"])
    grace = int(argv[argv.index("--graceful") + 1])
    assert int(unit["TimeoutStopSec"].removesuffix("s")) > grace
    assert unit["RestartPreventExitStatus"] == "78"
