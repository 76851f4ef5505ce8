"""Entering a Nix environment: the builder's cached env script against `nix-shell -p`, and a cold build.

Side by side, the same command with the same packages (python3 and python3Packages.roman from
the stand-in channel of tests/nixchannel, offline):

    cached   bash -c '. env.sh; python3 -c "import roman"'     (what the sandbox does per stage)
    nix-shell  nix-shell -p python3 python3Packages.roman --run '...'   (warm: everything built)
    lookup   the executor's warm dependencies stage in-process (marker, record, validity, env script)

and a cold build through a real `cutor-spool builder` process: request renamed into
builds/incoming/ -> builds/done/<key>/result.json, for an environment with a package never built
before. With real nixpkgs nix-shell spends seconds evaluating; the stand-in evaluates in tens of
milliseconds, so the ratio here is the floor, not the typical gap.

    sudo .venv/bin/python benchmarks/nix_env.py [--runs 30] [--nixpkgs PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from _common import ROOT, median, percentile, scratch_spool

from cutor_spool.builder.nixcmd import NixSettings, spool_tag

CHANNEL = ROOT / "tests" / "nixchannel"
PACKAGES = ["python3", "python3Packages.roman"]
COMMAND = "python3 -c 'import roman'"
# Every variant runs with this environment (the caller's PATH may hold slow shims, like pyenv's).
CLEAN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
NIX_ENV = {
    **CLEAN_ENV,
    "NIX_PATH": "",
    "NIX_CONFIG": "experimental-features = nix-command flakes\nsubstituters =\nsandbox = true\n"
    "extra-sandbox-paths = /bin /usr /lib /lib64\n",
}


def timed(argv: list[str], runs: int, env: dict[str, str] | None = None) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def interleaved(variants: list[tuple[list[str], dict[str, str] | None]], runs: int) -> list[list[float]]:
    """Times the variants in turn, run after run, so that a change in the machine's load (other
    work on a shared box) weighs on all of them alike."""
    samples: list[list[float]] = [[] for _ in variants]
    for _ in range(runs):
        for i, (argv, env) in enumerate(variants):
            samples[i] += timed(argv, 1, env)
    return samples


def row(name: str, samples: list[float], base: float | None = None) -> None:
    med = median(samples)
    ratio = f"{med / base:7.1f}x" if base else "        "
    print(f"  {name:<34} median {med:8.1f} ms   p95 {percentile(samples, 0.95):8.1f} ms  {ratio}")


def start_builder(spool: Path, key_dir: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cutor_spool",
            "--spool",
            str(spool),
            "-q",
            "builder",
            "--signing-key",
            str(key_dir / "signing.key"),
            "--state-dir",
            str(key_dir / "state"),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not list((spool / "workers").glob("builder-*.json")):
        time.sleep(0.05)
    return proc


def request_and_wait(spool: Path, nix_text: bytes | None, attrs: list[str]) -> tuple[str, float]:
    from cutor_spool.builder.environments import NixEnvironments
    from cutor_spool.builder.keys import for_attrs, for_nix_file
    from cutor_spool.builder.requests import Builds
    from cutor_spool.config import load_config
    from cutor_spool.layout import SpoolPaths

    paths = SpoolPaths(spool)
    envs = NixEnvironments(paths, load_config(spool))
    pin = envs.resolver.pin()
    if nix_text is None:
        request = for_attrs(attrs, pin, envs.system)
    else:
        request = for_nix_file("cutor.nix", nix_text, pin, envs.system)
    builds = Builds(paths)
    start = time.perf_counter()
    builds.send(request, nix_text)
    key = request.key()
    cancel = threading.Event()
    while builds.result(key) is None:
        builds.wait(key, until=time.monotonic() + 600, cancel=cancel)
    return key, (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--nixpkgs", default=str(CHANNEL), help="a nixpkgs path (default: the stand-in channel)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the builder needs Nix's store, build users and cgroups")
    nix_section = {"nixpkgs": args.nixpkgs, "sandbox_paths": ["/bin", "/usr", "/lib", "/lib64"]}
    with scratch_spool(nix=nix_section) as spool:
        try:
            measure(spool, args.runs, args.nixpkgs)
        finally:  # the scratch spool's GC roots go with it
            shutil.rmtree(NixSettings(spool_tag=spool_tag(spool)).roots_dir, ignore_errors=True)


def measure(spool: Path, runs: int, nixpkgs: str) -> None:
    builder = start_builder(spool, spool.parent)
    try:
        tag = secrets.token_hex(4)
        cold_nix = (
            "{ pkgs }: pkgs.mkShell { packages = [ pkgs.python3 pkgs.python3Packages.roman "
            f'(pkgs.runCommand "cold-{tag}" {{ }} "mkdir -p $out/bin") ]; }}'
        ).encode()
        cold_key, cold_ms = request_and_wait(spool, cold_nix, [])
        cold = json.loads((spool / "builds" / "done" / cold_key / "result.json").read_text())
        warm_key, warm_build_ms = request_and_wait(spool, None, PACKAGES)
        record = json.loads((spool / "builds" / "done" / warm_key / "result.json").read_text())
    finally:
        builder.send_signal(signal.SIGTERM)
        builder.wait(60)
    env_script = spool / "builds" / "done" / warm_key / "env.sh"

    print(f"Nix environments ({nixpkgs}); packages: {' '.join(PACKAGES)}; {runs} runs each")
    print("cold build, request -> builds/done (real builder process, a package never built before):")
    print(f"  end to end {cold_ms:8.1f} ms; the build itself {cold['build_time'] * 1000:8.1f} ms", end="")
    steps = ", ".join(f"{s['step']} {s['wall_time'] * 1000:.0f} ms" for s in cold["steps"])
    print(f" ({steps})")
    print(f"  packages already built, new environment: end to end {warm_build_ms:8.1f} ms")
    print(f"  closure: {len(record['paths'])} store paths, {record['closure_size']} bytes")

    shell = ["nix-shell", "-I", f"nixpkgs={nixpkgs}", "-p", *PACKAGES, "--run"]
    timed([*shell, "true"], 2, NIX_ENV)  # warm: everything built, files in the page cache
    results = {}
    for command in ("true", COMMAND):
        results[command] = interleaved(
            [
                (["bash", "-c", f'. "$0" >/dev/null 2>&1; {command}', str(env_script)], CLEAN_ENV),
                ([*shell, command], NIX_ENV),
                (["bash", "-c", "true" if command == "true" else "python3 -c pass"], CLEAN_ENV),
            ],
            runs,
        )
    sourcing = source_times(env_script, runs)
    lookups = warm_lookup(spool, runs)
    print("the warm environment, the same command both ways (ratio against the cached env script):")
    for command, (cached, nix_shell, bare) in results.items():
        print(f" {'entering' if command == 'true' else 'entering and running'}: {command}")
        row("cached env script (cutor-spool)", cached, median(cached))
        row("nix-shell -p, same packages", nix_shell, median(cached))
        row("no environment (python3 -c pass)" if command != "true" else "no environment", bare)
    row("sourcing env.sh alone (bash's clock)", sourcing)
    row("executor's warm lookup (in-process)", lookups)
    cached, nix_shell, _ = results["true"]
    ratio = median(nix_shell) / median(cached)
    print(f"entering: nix-shell -p / cached env script = {ratio:.1f}x (target: >= 5x with the stand-in channel)")


def source_times(env_script: Path, runs: int) -> list[float]:
    """What sourcing the env script costs inside a running bash, by bash's own clock: the part of
    entering that is ours, apart from starting a process (which a loaded machine makes slow)."""
    probe = 's=$EPOCHREALTIME; . "$0" >/dev/null 2>&1; e=$EPOCHREALTIME; echo "$s $e"'
    samples = []
    for _ in range(runs):
        out = subprocess.run(
            ["bash", "-c", probe, str(env_script)], check=True, capture_output=True, text=True, env=CLEAN_ENV
        ).stdout.split()
        samples.append((float(out[-1]) - float(out[-2])) * 1000)
    return samples


def warm_lookup(spool: Path, runs: int) -> list[float]:
    """The executor's side, warm: what `prepare` costs before the sandbox starts."""
    from cutor_spool.builder.environments import NixEnvironments
    from cutor_spool.config import load_config
    from cutor_spool.layout import SpoolPaths
    from cutor_spool.runner.intake import read_submission

    config = load_config(spool)
    source = spool.parent / "lookup" / "sub.0000000000000000"
    source.mkdir(parents=True)
    (source / "submission.yaml").write_text(json.dumps({"dependencies": PACKAGES, "run": COMMAND}))
    plan = read_submission(source, config).plan
    assert plan is not None
    envs = NixEnvironments(SpoolPaths(spool), config)
    cancel = threading.Event()
    samples = []
    for _ in range(runs + 1):
        start = time.perf_counter()
        outcome = envs.prepare(plan, source, cancel)
        samples.append((time.perf_counter() - start) * 1000)
        assert outcome.ok, outcome.message
    return samples[1:]  # the first checks validity with nix-store once per process


if __name__ == "__main__":
    main()
