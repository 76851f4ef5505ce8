"""The rule that decides the sandbox's /etc (runner/sandbox_etc.py, docs/security.md "The sandbox's
/etc"), on a tree of real files shaped like a host's /etc: what an operator's pattern brings in, the
symlinks it follows, and the denylist and the others-may-read rule winning over any pattern. The
same rule through a real sandbox, with secrets planted in the host's own /etc, is
test_hostile_etc.py's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from cutor_spool.config import SandboxConfig
from cutor_spool.runner.sandbox_etc import TOOLCHAIN_ETC, denied, etc_sources


def _tree(root: Path) -> Path:
    etc = root / "etc"
    files = {
        "ld.so.cache": 0o644,
        "os-release": 0o644,
        "shadow": 0o640,
        "gshadow": 0o640,
        "sudoers": 0o440,
        "sudoers.d/README": 0o440,
        "ssh/ssh_config": 0o644,
        "ssh/ssh_host_ed25519_key": 0o644,  # readable by mistake: the denylist still holds
        "ssl/certs/ca.pem": 0o644,
        "ssl/private/host.key": 0o644,
        "ssl/openssl.cnf": 0o644,
        "cutor-spool/server.key": 0o644,
        "cutor-spool/cutor-spool.env": 0o644,
        "environment": 0o644,
        "app/token.key": 0o644,
        "app/only-root.conf": 0o600,
        "app/settings.conf": 0o644,
        "java-17-openjdk/security/java.security": 0o644,
        "fpc-3.2.2.cfg": 0o644,
    }
    for rel, mode in files.items():
        path = etc / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"content of {rel}\n")
        path.chmod(mode)
    (etc / "ssl" / "private").chmod(0o710)
    (etc / "alternatives").mkdir()
    os.symlink("/etc/fpc-3.2.2.cfg", etc / "alternatives" / "fpc.cfg")
    os.symlink("/etc/alternatives/fpc.cfg", etc / "fpc.cfg")
    os.symlink("../shadow", etc / "app" / "shadow-link")  # a link to a denied file: its target is not copied
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret").write_text("outside\n")
    os.symlink(str(outside), etc / "escape")  # a directory link out of /etc
    return etc


def _names(entries: list[tuple[str, str, bytes]]) -> dict[str, str]:
    return {rel: kind for rel, kind, _ in entries}


def test_the_default_brings_the_toolchains_config_through_alternatives(tmp_path: Path) -> None:
    etc = _tree(tmp_path)
    names = _names(etc_sources(False, TOOLCHAIN_ETC, root=etc))
    assert names["fpc.cfg"] == "l" and names["alternatives/fpc.cfg"] == "l"
    assert names["fpc-3.2.2.cfg"] == "f"  # the end of the chain, though only fpc.cfg was named
    assert names["java-17-openjdk/security/java.security"] == "f"
    assert "app/settings.conf" not in names and "ssl" not in names  # not named, no network


@pytest.mark.parametrize("pattern", ["*", "**", "**/*", "app/*", "ssl/private/*", "ssh/*", "cutor-spool"])
@pytest.mark.parametrize("network", [False, True])
def test_nothing_secret_whatever_the_patterns(tmp_path: Path, pattern: str, network: bool) -> None:
    etc = _tree(tmp_path)
    entries = etc_sources(network, [pattern], root=etc)
    names = _names(entries)
    for secret in ("shadow", "gshadow", "sudoers", "sudoers.d", "ssh/ssh_host_ed25519_key", "ssl/private",
                   "ssl/private/host.key", "cutor-spool", "cutor-spool/server.key", "cutor-spool/cutor-spool.env",
                   "environment", "app/token.key", "app/only-root.conf", "escape/secret"):  # fmt: skip
        assert secret not in names, f"{pattern}: {secret}"
    contents = [content for _, kind, content in entries if kind == "f"]
    assert not any(b"outside" in content or b"content of shadow" in content for content in contents)
    if pattern in ("*", "**", "app/*"):
        assert names["app/settings.conf"] == "f"  # what an operator names and others may read does come
    if network:
        assert names["ssl/certs/ca.pem"] == "f"


def test_the_denylist() -> None:
    assert denied("shadow") and denied("shadow-") and denied("gshadow")
    assert denied("ssh/ssh_config") and denied("ssl/private/x.pem") and denied("sudoers.d/x")
    assert denied("cutor-spool/server.key") and denied("anything/deep/server.key")
    assert not denied("ssl/certs/ca.pem") and not denied("java-17-openjdk/security/java.security")
    assert not denied("passwd") and not denied("fpc.cfg")


@pytest.mark.parametrize("pattern", ["/etc/shadow", "../root", "a/../../b", ""])
def test_a_pattern_out_of_etc_is_refused(pattern: str) -> None:
    with pytest.raises(ValidationError, match="not a pattern relative to /etc"):
        SandboxConfig(etc=[pattern])
