"""The builder's pure parts (keys, Nix command lines, gc choices, the cache's pruning) and its
small real-Nix pieces (the stand-in channel, the signing key, the nixpkgs pin)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import write_config
from nixtest import CHANNEL, NIX_ENV, nix, unique

from cutor_spool.builder import cache, nixcmd
from cutor_spool.builder.build import find_shell, for_sandbox
from cutor_spool.builder.gc import choose, union_size
from cutor_spool.builder.inventory import CachedEnv
from cutor_spool.builder.keys import NixpkgsPin, for_attrs, for_nix_file
from cutor_spool.builder.nixcmd import NixSettings
from cutor_spool.builder.nixpkgs import PinResolver, is_flake_ref
from cutor_spool.config import NixConfig
from cutor_spool.documents.build import BuildRecord, BuildStatus
from cutor_spool.errors import ConfigError

PIN = NixpkgsPin(kind="path", ref="/srv/nixpkgs", identity="sha256-AAAA")


def test_key_covers_what_determines_the_environment() -> None:
    base = for_attrs(["gcc", "python3"], PIN, "x86_64-linux").key()
    assert len(base) == 64 and int(base, 16) >= 0
    assert for_attrs(["gcc", "python3"], PIN, "x86_64-linux").key() == base
    # The path is where nixpkgs is, not what it is: another host's copy shares the key.
    moved = NixpkgsPin(kind="path", ref="/elsewhere", identity="sha256-AAAA")
    assert for_attrs(["gcc", "python3"], moved, "x86_64-linux").key() == base
    others = {
        for_attrs(["python3", "gcc"], PIN, "x86_64-linux").key(),  # order decides PATH precedence
        for_attrs(["gcc"], PIN, "x86_64-linux").key(),
        for_attrs(["gcc", "python3"], PIN, "aarch64-linux").key(),
        for_attrs(["gcc", "python3"], PIN.model_copy(update={"identity": "sha256-BBBB"}), "x86_64-linux").key(),
        for_nix_file("cutor.nix", b"{ pkgs }: pkgs.mkShell {}", PIN, "x86_64-linux").key(),
        for_nix_file("cutor.nix", b"{ pkgs }: pkgs.mkShell { }", PIN, "x86_64-linux").key(),
    }
    assert base not in others and len(others) == 6


def test_attribute_paths_are_validated_in_requests_too() -> None:
    with pytest.raises(ValueError, match="attribute path"):
        for_attrs(['python3"; builtins.readFile "/etc/shadow'], PIN, "x86_64-linux")


def test_attributes_reach_nix_as_data_never_as_code(tmp_path: Path) -> None:
    attrs = json.dumps(["python3Packages.numpy", "gcc"])
    argv = nixcmd.eval_argv(
        NixSettings(),
        tmp_path / "env.nix",
        search_path={"nixpkgs": CHANNEL},
        args={"system": "x86_64-linux", "attrs": attrs},
    )
    assert "--expr" not in argv and "-E" not in argv
    assert argv[argv.index("--file") + 1] == str(tmp_path / "env.nix")
    i = argv.index("attrs")
    assert argv[i - 1] == "--argstr" and argv[i + 1] == attrs
    assert argv.count("python3Packages.numpy") == 0  # only inside the one JSON string


def test_nix_config_is_offline_restricted_and_sandboxed() -> None:
    settings = NixSettings.from_config(NixConfig(sandbox_paths=["/usr"]), Path("/srv/spool"))
    text = nixcmd.nix_config(settings, restricted=True)
    lines = dict(line.split(" = ", 1) if " = " in line else (line.rstrip(" ="), "") for line in text.splitlines())
    assert lines["substituters"] == "" and lines["restrict-eval"] == "true" and lines["allowed-uris"] == ""
    assert lines["sandbox"] == "true" and lines["sandbox-fallback"] == "false"
    assert lines["extra-sandbox-paths"] == "/usr"
    assert nixcmd.nix_config(settings).count("restrict-eval = false") == 1
    env = nixcmd.nix_env(settings, text)
    assert set(env) == {"PATH", "LANG", "HOME", "NIX_CONFIG", "NIX_PATH"}  # nothing of the worker's own


def test_separate_store_paths() -> None:
    settings = NixSettings(store_root=Path("/srv/other"), spool_tag="spool-x")
    assert nixcmd.store_args(settings) == ["--store", "/srv/other"]
    assert settings.roots_dir == Path("/srv/other/nix/var/nix/gcroots/cutor-spool/spool-x")
    assert settings.host_path("/nix/store/abc-x") == Path("/srv/other/nix/store/abc-x")
    assert NixSettings().host_path("/nix/store/abc-x") == Path("/nix/store/abc-x")
    assert nixcmd.spool_tag(Path("/a/spool")) != nixcmd.spool_tag(Path("/b/spool"))


def test_flake_references_and_paths() -> None:
    assert is_flake_ref("github:NixOS/nixpkgs/0123abcd") and is_flake_ref("path:/srv/nixpkgs")
    assert not is_flake_ref("/srv/nixpkgs") and not is_flake_ref("channels/nixpkgs")
    with pytest.raises(ConfigError, match="not a pin"):
        PinResolver("flake:nixpkgs", Path("/"), NixSettings())
    with pytest.raises(ConfigError, match="not set"):
        PinResolver(None, Path("/"), NixSettings())


def test_env_script_uses_the_sandbox_tmp_instead_of_mktemp() -> None:
    script = b'PATH=/x\nexport NIX_BUILD_TOP="$(mktemp -d -t nix-shell.XXXXXX)"\nexport TMP="$NIX_BUILD_TOP"\n'
    adapted = for_sandbox(script)
    assert b"mktemp" not in adapted and b'export NIX_BUILD_TOP="${TMPDIR:-/tmp}"\n' in adapted
    assert for_sandbox(b"PATH=/x\n") == b"PATH=/x\n"


def test_shell_comes_from_the_closure_when_it_has_one() -> None:
    bash = "/nix/store/" + "a" * 32 + "-bash-5.2-p15"
    interactive = "/nix/store/" + "b" * 32 + "-bash-interactive-5.2-p15"
    assert find_shell([bash, interactive]) == f"{interactive}/bin/bash"
    assert find_shell([bash]) == f"{bash}/bin/bash"
    assert find_shell(["/nix/store/" + "c" * 32 + "-bashdb-1.0"]) == "/bin/bash"


def _env(key: str, paths: dict[str, int], uses: dict[str, float], created: float) -> CachedEnv:
    record = BuildRecord(key=key, status=BuildStatus.OK, closure_size=sum(paths.values()), paths=list(paths.items()))
    return CachedEnv(key, Path("/nowhere") / key, record, uses, created)


def test_gc_choices() -> None:
    now = 1_000_000.0
    shared = {"/nix/store/shared": 100}
    old = _env("old", {**shared, "/nix/store/old": 50}, {"s1": now - 10 * 86400}, now - 20 * 86400)
    busy = _env("busy", {**shared, "/nix/store/busy": 70}, {"running": now - 30 * 86400}, now - 30 * 86400)
    new = _env("new", {**shared, "/nix/store/new": 30}, {"s2": now - 60}, now - 3600)
    envs = [old, busy, new]
    assert union_size(envs) == 250  # shared paths counted once

    chosen, in_use = choose(envs, {"running"}, now, unused_for=7 * 86400, max_size=None)
    assert [c.env.key for c in chosen] == ["old"] and [e.key for e in in_use] == ["busy"]

    chosen, _ = choose(envs, {"running"}, now, unused_for=None, max_size=210)
    assert [c.env.key for c in chosen] == ["old"]  # least recently used first, the busy one never
    chosen, _ = choose(envs, {"running"}, now, unused_for=None, max_size=0)
    assert [c.env.key for c in chosen] == ["old", "new"]


def test_cache_prune_keeps_what_kept_environments_share(tmp_path: Path) -> None:
    (tmp_path / "nar").mkdir()

    def narinfo(name: str) -> None:
        (tmp_path / "nar" / f"{name}.nar.zst").write_bytes(b"x" * 10)
        (tmp_path / f"{name}.narinfo").write_text(f"StorePath: /nix/store/{name}-p\nURL: nar/{name}.nar.zst\n")

    for name in ("shared", "gone", "young"):
        narinfo(name)
    (tmp_path / "nar" / "orphan-young.nar.zst").write_bytes(b"y")
    old = time.time() - 7200
    for name in ("shared", "gone"):
        os.utime(tmp_path / "nar" / f"{name}.nar.zst", (old, old))
    pruned = cache.prune(tmp_path, {"/nix/store/shared-p", "/nix/store/gone-p"}, {"/nix/store/shared-p"}, min_age=3600)
    assert pruned.narinfos == 1 and pruned.nars == 1
    assert sorted(p.name for p in tmp_path.glob("*.narinfo")) == ["shared.narinfo", "young.narinfo"]
    assert sorted(p.name for p in (tmp_path / "nar").iterdir()) == [
        "orphan-young.nar.zst",  # may be an upload in progress
        "shared.nar.zst",
        "young.nar.zst",
    ]


@pytest.mark.nix
def test_public_key_from_secret_matches_nix(tmp_path: Path) -> None:
    from nixtest import need_nix

    need_nix()
    public = cache.ensure_signing_key(tmp_path / "k.sec", NixSettings(), "test-host")
    assert (tmp_path / "k.sec").stat().st_mode & 0o077 == 0
    secret = (tmp_path / "k.sec").read_text()
    converted = subprocess.run(
        ["nix", "key", "convert-secret-to-public"],
        input=secret,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **NIX_ENV},
    ).stdout.strip()
    assert public == converted and public.startswith("cutor-spool-test-host-1:")
    assert cache.ensure_signing_key(tmp_path / "k.sec", NixSettings()) == public  # kept, not remade


@pytest.mark.nix
def test_nixpkgs_pin_of_a_path_and_of_a_flake(tmp_path: Path) -> None:
    from nixtest import need_nix

    need_nix()
    channel = tmp_path / "channel"
    subprocess.run(["cp", "-r", str(CHANNEL), str(channel)], check=True)
    path_pin = PinResolver(str(channel), tmp_path, NixSettings(), ttl=0).pin()
    flake_pin = PinResolver(f"path:{channel}", tmp_path, NixSettings(), ttl=0).pin()
    assert path_pin.kind == "path" and path_pin.ref == str(channel) and path_pin.identity.startswith("sha256-")
    assert flake_pin.kind == "flake" and flake_pin.identity == path_pin.identity  # both are the NAR hash
    assert "narHash=" in flake_pin.ref
    assert not (channel / "flake.lock").exists()
    (channel / "lib.nix").write_text((channel / "lib.nix").read_text() + f"\n# {unique()}\n")
    assert PinResolver(str(channel), tmp_path, NixSettings(), ttl=0).pin().identity != path_pin.identity
    with pytest.raises(ConfigError, match=r"no default\.nix"):
        PinResolver(str(tmp_path / "nothing"), tmp_path, NixSettings()).pin()


@pytest.mark.nix
def test_stand_in_channel_serves_nix_shell_and_print_dev_env(tmp_path: Path) -> None:
    from nixtest import need_nix

    need_nix()
    shell = nix(
        "nix-shell",
        "-I",
        f"nixpkgs={CHANNEL}",
        "-p",
        "python3",
        "python3Packages.roman",
        "--run",
        "python3 -c 'import roman; print(roman.toRoman(2024))'; command -v python3",
    )
    out = shell.stdout.splitlines()
    assert out[0] == "MMXXIV" and out[1].startswith("/nix/store/") and "-python3-" in out[1]
    expr = tmp_path / "shell.nix"
    expr.write_text(f"let pkgs = import {CHANNEL} {{ }}; in pkgs.mkShell {{ packages = [ pkgs.gcc pkgs.gnumake ]; }}")
    script = nix("nix", "print-dev-env", "-f", str(expr)).stdout
    sourced = subprocess.run(
        ["bash", "-c", '. "$0" >/dev/null; command -v gcc; command -v make', "/dev/stdin"],
        input=script,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert [Path(p).name for p in sourced] == ["gcc", "make"]
    assert all(p.startswith("/nix/store/") for p in sourced)


def test_spool_config_accepts_the_nix_section(tmp_path: Path) -> None:
    from cutor_spool.config import load_config

    write_config(tmp_path, nix={"nixpkgs": str(CHANNEL), "build_memory": "1GiB", "sandbox_paths": ["/usr"]})
    nix_config = load_config(tmp_path).nix
    assert nix_config.build_memory == 2**30 and nix_config.sandbox and nix_config.binary_cache
