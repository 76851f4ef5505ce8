"""flake.nix, checked as far as Nix works without the internet (docs/deploy.md lists what is not).

Real nixpkgs cannot be fetched here, so `nixpkgs` is overridden (`--override-input`, as a user
would pin another nixpkgs) with a *shim*: the tests' stand-in channel (tests/nixchannel) plus the
few nixpkgs functions the flake calls, with nixpkgs' calling conventions (`callPackage`,
`buildPythonApplication` with `makeWrapperArgs`, `writeShellScript`, ...). The shim's
buildPythonApplication really builds: it installs this source and writes the wrapper, with the
host's Python and this venv's libraries standing in for nixpkgs' Python packages. So `nix build`,
`nix run .#` and the flake's own `cli` check run for real; what they cannot show is whether real
nixpkgs' Python packaging accepts the package (that is the `package` and `nixos` checks, run where
the Nix cache is reachable).

The NixOS module cannot be evaluated by nixpkgs' module system offline; it is evaluated with a
minimal stand-in of the few `lib` functions it uses, which checks its own logic: the units it
generates, their instances, and that they agree with the templates `cutor-spool systemd` prints.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, need

pytestmark = pytest.mark.nix

CHANNEL = ROOT / "tests" / "nixchannel"
NIX_ENV = {
    # Offline: no substituters. No Nix sandbox and no build users: the shim's packages link host
    # programs and this checkout's venv, which build users may not be able to read.
    "NIX_CONFIG": "experimental-features = nix-command flakes\nsubstituters =\nsandbox = false\nbuild-users-group =\n",
    "NIX_PATH": "",
}
FLAKE_FILES = ("flake.nix", "flake.lock", "nix", "pyproject.toml", "cutor_spool", "examples")

SHIM = r"""
{
  description = "nixpkgs for cutor-spool's flake tests: the stand-in channel plus a shim";
  outputs =
    { self }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: builtins.listToAttrs (map (s: { name = s; value = f s; }) systems);
      mk =
        system:
        let
          base = import ./channel { inherit system; };
          # A package that is only a name: outputs the tests evaluate but never run.
          stub = name: base.runCommand name { } "mkdir -p $out";
          # Host programs linked into the store, as the stand-in channel's packages are.
          host =
            name: programs:
            base.runCommand "${name}-host" { inherit programs; } ''
              mkdir -p $out/bin
              for p in $programs; do
                for dir in /usr/bin /usr/sbin /bin /sbin; do
                  if [ -x "$dir/$p" ]; then ln -s "$dir/$p" "$out/bin/$p"; break; fi
                done
              done
            '';
          pythonStub = names: builtins.listToAttrs (map (n: { name = n; value = stub "python3-${n}"; }) names);
          pkgs = base // rec {
            callPackage =
              path: args:
              let
                f = import path;
              in
              f (builtins.intersectAttrs (builtins.functionArgs f) pkgs // args);
            lib = base.lib // {
              licenses.mit = { spdxId = "MIT"; };
              platforms.linux = systems;
            };
            writeShellScript =
              name: text:
              base.runCommand name { inherit text; passAsFile = [ "text" ]; } ''
                { echo '#!/bin/bash'; cat "$textPath"; } > $out
                chmod +x $out
              '';
            bubblewrap = host "bubblewrap" [ "bwrap" ];
            tini = host "tini" [ "tini" "tini-static" ];
            util-linux = host "util-linux" [ "prlimit" "setpriv" ];
            nix = host "nix" [ "nix" "nix-store" "nix-build" "nix-instantiate" ];
            systemd = host "systemd" [ "systemd-analyze" ];
            ruff = stub "ruff";
            chromium = stub "chromium";
            nixfmt-rfc-style = stub "nixfmt";
            testers.runNixOSTest = args: stub "nixos-vm-test-not-run-offline";
            # nixpkgs' pkgsStatic as far as the flake uses it: runCommandCC with a C compiler in $CC
            # (real pkgsStatic links with musl; here the host's gcc with glibc's static libc).
            pkgsStatic = pkgs // {
              runCommandCC =
                name: env: buildCommand:
                base.runCommand name ({ nativeBuildInputs = [ base.gcc ]; CC = "gcc"; } // env) buildCommand;
            };
            python3 = base.python3 // { withPackages = f: base.python3; };
            python3Packages =
              base.python3Packages
              // pythonStub [
                "setuptools" "click" "pydantic" "pyyaml" "watchdog" "filelock" "docker" "jinja2" "pynacl"
                "pytest" "pytest-timeout" "hypothesis" "mypy" "types-pyyaml" "prometheus-client"
              ]
              // {
                # nixpkgs' calling convention; the wrapper applies makeWrapperArgs' `--prefix VAR
                # SEP VALUE` and `--set-default VAR VALUE` (the only two the package uses).
                buildPythonApplication =
                  attrs:
                  (base.runCommand "${attrs.pname}-${attrs.version}"
                    {
                      inherit (attrs) src;
                      wrapperArgs = attrs.makeWrapperArgs;
                      program = attrs.meta.mainProgram;
                      python = "@PYTHON@";
                      site = "@SITE@";
                    }
                    ''
                      mkdir -p $out/lib/site $out/bin
                      cp -r $src/cutor_spool $out/lib/site/
                      {
                        echo '#!/bin/bash'
                        set -- $wrapperArgs
                        while [ $# -gt 0 ]; do
                          case "$1" in
                            --prefix) echo "export $2=$4$3\$$2"; shift 4 ;;
                            --set-default) echo "export $2=\''${$2:-$3}"; shift 3 ;;
                            *) echo "shim: unknown makeWrapperArgs $1" >&2; exit 1 ;;
                          esac
                        done
                        echo "export PYTHONPATH=$out/lib/site:$site"
                        echo "exec $python -m cutor_spool \"\$@\""
                      } > $out/bin/$program
                      chmod +x $out/bin/$program
                    '')
                  // (attrs.passthru or { }) // { inherit (attrs) dependencies; };
              };
          };
        in
        pkgs;
    in
    {
      legacyPackages = forAll mk;
      lib = (mk "x86_64-linux").lib;
    };
}
"""

# The lib functions nix/module.nix uses, with nixpkgs' meaning; options keep their attributes so
# the test can apply defaults (as the module system would) and read the generated config.
MODULE_EVAL = r"""
let
  stubLib = rec {
    mkOption = attrs: attrs // { _isOption = true; };
    mkEnableOption = name: mkOption { default = false; description = "Whether to enable ${name}."; };
    mkIf = condition: content: { _type = "if"; inherit condition content; };
    literalExpression = text: { _type = "literalExpression"; inherit text; };
    types = {
      package = "package"; str = "str"; listOf = t: "listOf"; nullOr = t: "nullOr";
      ints = { unsigned = "unsigned"; positive = "positive"; };
    };
    range = first: last: if first > last then [ ] else [ first ] ++ range (first + 1) last;
    escapeShellArg = arg: "'" + builtins.replaceStrings [ "'" ] [ "'\\''" ] (toString arg) + "'";
    escapeShellArgs = args: builtins.concatStringsSep " " (map escapeShellArg args);
    optionalString = cond: s: if cond then s else "";
  };
  pkgs = {
    stdenv.hostPlatform.system = "x86_64-linux";
    formats.yaml = _: { type = "yaml"; generate = name: value: builtins.toFile name (builtins.toJSON value); };
  };
  flake = { packages.x86_64-linux.default = "@PACKAGE@"; };
  module = import @MODULE@ flake;
  evaluate =
    user:
    let
      options = (module { config = { }; lib = stubLib; inherit pkgs; }).options.services.cutor-spool;
      cfg = builtins.mapAttrs (_: o: o.default) options // user;
      result = module { config.services.cutor-spool = cfg; lib = stubLib; inherit pkgs; };
    in
    { inherit (result.config) condition; } // (if result.config.condition then result.config.content else { });
in
{
  off = evaluate { };
  on = evaluate @USER@;
}
"""


def nix(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), capture_output=True, text=True, cwd=cwd, env={**os.environ, **NIX_ENV, **(env or {})}, timeout=300
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"{proc.args}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def flake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[str]]]:
    """A copy of the flake's files (a `path:` flake, so nothing writes into the work tree) and the
    override arguments that point its nixpkgs at the shim."""
    need(shutil.which("nix") is not None, "Nix is not installed")
    tmp = tmp_path_factory.mktemp("flake")
    source = tmp / "cutor-spool"
    source.mkdir()
    for name in FLAKE_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, source / name)
    shim = tmp / "nixpkgs-shim"
    shim.mkdir()
    site = sysconfig.get_paths()["purelib"]
    (shim / "flake.nix").write_text(SHIM.replace("@PYTHON@", sys.executable).replace("@SITE@", site))
    shutil.copytree(CHANNEL, shim / "channel")  # inside the shim: pure evaluation reads no outside path
    yield source, ["--override-input", "nixpkgs", f"path:{shim}"]


def test_every_nix_file_parses() -> None:
    need(shutil.which("nix-instantiate") is not None, "Nix is not installed")
    files = [ROOT / "flake.nix", *sorted((ROOT / "nix").glob("*.nix"))]
    assert len(files) >= 4
    for path in files:
        ok(nix("nix-instantiate", "--parse", str(path)))


def test_the_committed_lock_pins_nixpkgs_to_a_revision() -> None:
    """flake.lock pins the input flake.nix names to one commit and its content hash (the lock was
    written from a published lock of that commit: this machine cannot fetch nixpkgs to make one)."""
    lock = json.loads((ROOT / "flake.lock").read_text())
    node = lock["nodes"][lock["nodes"]["root"]["inputs"]["nixpkgs"]]
    assert node["original"] == {"owner": "NixOS", "repo": "nixpkgs", "ref": "nixos-25.05", "type": "github"}
    assert 'inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";' in (ROOT / "flake.nix").read_text()
    locked = node["locked"]
    assert len(locked["rev"]) == 40 and int(locked["rev"], 16) >= 0
    assert locked["narHash"].startswith("sha256-") and locked["type"] == "github"


def test_flake_locks_against_an_overridden_nixpkgs(flake: tuple[Path, list[str]]) -> None:
    source, override = flake
    meta = json.loads(ok(nix("nix", "flake", "metadata", "--json", *override, f"path:{source}")))
    nixpkgs = meta["locks"]["nodes"]["nixpkgs"]
    assert nixpkgs["original"]["type"] == "github" and nixpkgs["original"]["repo"] == "nixpkgs"
    assert nixpkgs["locked"]["type"] == "path"  # the override took


def test_flake_outputs_evaluate_and_check(flake: tuple[Path, list[str]]) -> None:
    source, override = flake
    ref = f"path:{source}"
    outputs = {
        name: json.loads(ok(nix("nix", "eval", "--json", *override, f"{ref}#{name}", "--apply", "builtins.attrNames")))
        for name in ("packages", "apps", "devShells", "checks", "nixosModules", "overlays", "formatter")
    }
    assert outputs["packages"] == ["aarch64-linux", "x86_64-linux"]
    assert outputs["nixosModules"] == ["cutor-spool", "default"]
    system = "x86_64-linux"
    apps = json.loads(
        ok(nix("nix", "eval", "--json", *override, f"{ref}#apps.{system}", "--apply", "builtins.attrNames"))
    )
    assert apps == ["builder", "cutor-spool", "default", "executor", "status-page"]
    checks = json.loads(
        ok(nix("nix", "eval", "--json", *override, f"{ref}#checks.{system}", "--apply", "builtins.attrNames"))
    )
    assert checks == ["cli", "nixos", "package"]
    name = json.loads(ok(nix("nix", "eval", "--json", *override, f"{ref}#packages.{system}.default.name")))
    assert name == "cutor-spool-0.1.0"  # the version comes from pyproject.toml
    # `nix flake check` evaluates every output and checks its type (apps, modules, overlays, ...);
    # --no-build: the nixos check is a VM and the package check wants real nixpkgs.
    ok(nix("nix", "flake", "check", "--no-build", *override, ref))


def test_nix_run_and_the_cli_check_work(flake: tuple[Path, list[str]], tmp_path: Path) -> None:
    need(os.geteuid() == 0, "building needs root (the Nix store)")
    source, override = flake
    ref = f"path:{source}"
    assert ok(nix("nix", "run", *override, ref + "#", "--", "--version")).strip().endswith("0.1.0")
    spool = tmp_path / "spool"
    ok(nix("nix", "run", *override, ref + "#", "--", "--spool", str(spool), "init"))
    # Worker apps take the spool from CUTOR_SPOOL (global options go before the subcommand).
    ok(nix("nix", "run", *override, ref + "#status-page", env={"CUTOR_SPOOL": str(spool)}))
    assert (spool / "status" / "index.html").is_file()
    built = json.loads(ok(nix("nix", "build", "--no-link", "--json", *override, ref + "#default")))
    package = built[0]["outputs"]["out"]
    wrapper = (Path(package) / "bin" / "cutor-spool").read_text()
    assert "bwrap" not in wrapper and "-host/bin" in wrapper  # makeWrapperArgs' PATH reached the wrapper
    path_dirs = [Path(d) for d in wrapper.split("export PATH=")[1].split(":$PATH")[0].split(":")]
    on_path = {p.name for d in path_dirs for p in d.iterdir()}
    assert {"bwrap", "tini", "prlimit", "setpriv", "nix"} <= on_path
    # The flake's own check, built for real: CLI, spool, validation, status page, systemd units.
    ok(nix("nix", "build", "--no-link", *override, ref + "#checks.x86_64-linux.cli", "-L"))


def is_static_elf(path: Path) -> bool:
    """An ELF executable without a PT_INTERP program header: no dynamic loader, any image runs it."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2, f"{path} is not a 64-bit ELF file"
    phoff = int.from_bytes(data[0x20:0x28], "little")
    phentsize = int.from_bytes(data[0x36:0x38], "little")
    phnum = int.from_bytes(data[0x38:0x3A], "little")
    types = [int.from_bytes(data[phoff + i * phentsize : phoff + i * phentsize + 4], "little") for i in range(phnum)]
    return 3 not in types  # PT_INTERP


def test_the_package_starts_stages_through_its_prebuilt_static_launcher(
    flake: tuple[Path, list[str]], tmp_path: Path, run_dir: Path
) -> None:
    """The package brings its launcher (nix/launcher.nix) and names it in the wrapper, so a host
    without a C compiler still starts stages through it; here the executor, run from the built
    package, must use it and compile none of its own."""
    need(os.geteuid() == 0, "building and the executor need root")
    need(shutil.which("bwrap") is not None, "bubblewrap is not installed")
    source, override = flake
    ref = f"path:{source}"
    built = json.loads(ok(nix("nix", "build", "--no-link", "--json", *override, ref + "#default")))
    wrapper = (Path(built[0]["outputs"]["out"]) / "bin" / "cutor-spool").read_text()
    match = re.search(r"^export CUTOR_SPOOL_LAUNCHER=\$\{CUTOR_SPOOL_LAUNCHER:-(/nix/store/\S+)\}$", wrapper, re.M)
    assert match, wrapper
    launcher = Path(match.group(1))
    assert launcher.name == "cutor-spool-launcher" and is_static_elf(launcher)
    echoed = subprocess.run([launcher, "marker=no", "nofile=64", "--", "sh", "-c", "ulimit -n"], capture_output=True)
    assert (echoed.returncode, echoed.stdout) == (0, b"64\n"), echoed

    spool = tmp_path / "spool"
    state = run_dir  # its own state directory, to see that it compiles no launcher
    ok(nix("nix", "run", *override, ref + "#", "--", "--spool", str(spool), "init"))
    job = tmp_path / "job"
    job.mkdir()
    (job / "submission.yaml").write_text(
        'run: echo "uid $(id -u) nofile $(ulimit -n)"\nlimits:\n  run: {open_files: 77}\n'
    )
    executor = subprocess.Popen(
        ["nix", "run", *override, ref + "#executor", "--", "--spool", str(spool), "--state-dir", str(state)],
        env={**os.environ, **NIX_ENV},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        submitted = nix(
            "nix", "run", *override, ref + "#", "--", "--spool", str(spool),
            "submit", str(job), "--id", "launched", "--wait", "--timeout", "120",
        )  # fmt: skip
    finally:
        executor.terminate()
        _, err = executor.communicate(timeout=60)
    result = spool / "done" / "launched" / "result"
    assert submitted.returncode == 0, (submitted.stdout, err.decode()[-3000:])
    status = json.loads((result / "status.json").read_text())
    assert (status["state"], status["outcome"]) == ("done", "ok"), status
    stdout = json.loads((result / "run.json").read_text())["stdout"]
    uid, nofile = stdout.split()[1], stdout.split()[3]
    assert int(uid) != 0 and nofile == "77", stdout
    # The prebuilt launcher ran the stage (not prlimit and setpriv, not one the executor compiled).
    assert f"stages start through the launcher {launcher}" in err.decode(), err.decode()[-3000:]
    assert not list(state.glob("launcher/cutor-launch-*")), list(state.glob("launcher/*"))


def evaluate_module(tmp_path: Path, user: str) -> dict[str, Any]:
    expr = (
        MODULE_EVAL.replace("@MODULE@", str(ROOT / "nix" / "module.nix"))
        .replace("@PACKAGE@", "/nix/store/00000000000000000000000000000000-cutor-spool-0.1.0")
        .replace("@USER@", user)
    )
    path = tmp_path / "module-eval.nix"
    path.write_text(expr)
    return json.loads(ok(nix("nix-instantiate", "--eval", "--strict", "--json", str(path))))


def unit_keys(text: str) -> dict[str, str]:
    keys = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            keys[key.strip()] = value.strip()
    return keys


def test_nixos_module_generates_the_units_the_templates_describe(tmp_path: Path) -> None:
    need(shutil.which("nix-instantiate") is not None, "Nix is not installed")
    user = (
        '{ enable = true; spool = "/srv/spool"; executors = 3; builders = 2; concurrency = 4; '
        "settings = { version = 1; }; }"
    )
    result = evaluate_module(tmp_path, user)
    assert result["off"] == {"condition": False}
    on = result["on"]
    wants = on["systemd"]["targets"]["cutor-spool"]["wants"]
    assert wants == [
        "cutor-spool-executor@1.service",
        "cutor-spool-executor@2.service",
        "cutor-spool-executor@3.service",
        "cutor-spool-builder@1.service",
        "cutor-spool-builder@2.service",
    ]
    services = on["systemd"]["services"]
    assert set(services) == {"cutor-spool-init", "cutor-spool-executor@", "cutor-spool-builder@"}
    executor = services["cutor-spool-executor@"]["serviceConfig"]
    exe = "/nix/store/00000000000000000000000000000000-cutor-spool-0.1.0/bin/cutor-spool"
    assert executor["ExecStart"] == (
        f"'{exe}' '--spool' '/srv/spool' 'executor' '--host' '%H' '--concurrency' '4' "
        "'--state-dir' '/run/cutor-spool' '--grace' '30'"
    )
    assert "'builder'" in services["cutor-spool-builder@"]["serviceConfig"]["ExecStart"]
    assert "spool.yaml" in services["cutor-spool-init"]["script"]

    from cutor_spool import systemd as units

    template = unit_keys(units.units("/usr/bin/cutor-spool", units.DEFAULT_ENV_FILE)["cutor-spool-executor@.service"])
    for key in ("KillMode", "KillSignal", "TimeoutStopSec", "OOMPolicy", "TasksMax", "Restart", "RestartSec"):
        assert str(executor[key]) == template[key], key
    assert executor["Delegate"] is True and template["Delegate"] == "yes"
    assert str(executor["RestartPreventExitStatus"]) == template["RestartPreventExitStatus"]
