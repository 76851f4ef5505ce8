"""Stores: `gc` keeps what is in use and frees the rest; an executor with a store of its own gets
its environment from the spool's signed binary cache (and refuses it unsigned by a trusted key).
Real Nix, real builder and executor processes, the stand-in channel."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import drop, make_submission, result, stage, wait_done
from nixtest import build_entries, build_record, builders, cli, need_nix, nix, nix_config, spool_roots, unique, wait_for

__all__ = ["builders", "spool_roots"]

pytestmark = pytest.mark.nix


@pytest.fixture(autouse=True)
def _nix(spool_roots: None) -> None:
    need_nix()


def _shell(name: str, extra: str = "") -> str:
    return f'{{ pkgs }}: pkgs.mkShell {{ name = "{name}"; packages = [ pkgs.python3 {extra} ]; }}'


def _state(spool: Path, entry_id: str) -> str | None:
    for path in (spool / "active").glob(f"{entry_id}.*/result/status.json"):
        try:
            return str(json.loads(path.read_text())["state"])
        except (OSError, ValueError):
            return None
    return None


@pytest.mark.slow  # ~9 s
def test_gc_keeps_what_is_in_use_and_frees_the_rest(spool: Path, tmp_path: Path, executors: Any, builders: Any) -> None:
    nix_config(spool)
    builders(spool)
    executors(spool, "--concurrency", "2")
    tag = unique()
    only_dropped = f'(pkgs.runCommand "gc-only-{tag}" {{ }} "mkdir -p $out/bin")'
    drop(
        spool,
        make_submission(
            tmp_path,
            "drop",
            {"dependencies": {"nix": "cutor.nix"}, "run": "echo quick"},
            {"cutor.nix": _shell(f"gc-drop-{tag}", only_dropped)},
        ),
        "uses-dropped",
    )
    wait_done(spool, "uses-dropped", timeout=120)
    drop(
        spool,
        make_submission(
            tmp_path,
            "keep",
            {"dependencies": {"nix": "cutor.nix"}, "run": "sleep 6; python3 -c 'print(\"kept\")'"},
            {"cutor.nix": _shell(f"gc-keep-{tag}")},
        ),
        "uses-kept",
    )
    wait_for(lambda: _state(spool, "uses-kept") == "running", 120, "the long submission to run")
    dropped = build_record(spool, stage(spool, "uses-dropped", "dependencies")["key"])
    kept_key = next(e.name for e in build_entries(spool) if e.name != dropped["key"])
    kept = build_record(spool, kept_key)
    only_path = next(p["path"] for p in dropped["packages"] if p["name"].startswith("gc-only-"))
    assert Path(dropped["env_path"]).exists() and Path(only_path).exists()
    cache = spool / "builds" / "cache"
    assert (cache / f"{Path(only_path).name[:32]}.narinfo").exists()

    done = cli(spool, "gc", "--unused-for", "0s", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [e["key"] for e in report["evicted"]] == [dropped["key"]]
    assert report["in_use"] == [kept_key]
    assert report["store_paths_deleted"] >= 2
    assert [e.name for e in build_entries(spool)] == [kept_key]
    assert not Path(dropped["env_path"]).exists()  # collected from the store
    assert not Path(only_path).exists()
    assert not (cache / f"{Path(only_path).name[:32]}.narinfo").exists()  # and from the binary cache
    assert all(Path(p).exists() for p, _ in kept["paths"])  # the running submission's closure stays

    wait_done(spool, "uses-kept", timeout=60)
    assert result(spool, "uses-kept")["outcome"] == "ok"
    assert stage(spool, "uses-kept", "run")["stdout"] == "kept\n"

    done = cli(spool, "gc", "--unused-for", "0s", "--json")
    report = json.loads(done.stdout)
    assert [e["key"] for e in report["evicted"]] == [kept_key]
    assert build_entries(spool) == []
    assert not Path(kept["env_path"]).exists()

    # Evicted means built again on the next use, not broken.
    drop(
        spool,
        make_submission(
            tmp_path,
            "again",
            {"dependencies": {"nix": "cutor.nix"}, "run": "echo again"},
            {"cutor.nix": _shell(f"gc-drop-{tag}", only_dropped)},
        ),
        "after-gc",
    )
    wait_done(spool, "after-gc", timeout=120)
    assert result(spool, "after-gc")["outcome"] == "ok"
    assert stage(spool, "after-gc", "dependencies")["source"] == "requested"


def test_gc_max_size_evicts_least_recently_used_first(
    spool: Path, tmp_path: Path, executors: Any, builders: Any
) -> None:
    nix_config(spool)
    builders(spool)
    executors(spool)
    tag = unique()
    keys = []
    for n in range(3):
        drop(
            spool,
            make_submission(
                tmp_path,
                f"s{n}",
                {"dependencies": {"nix": "cutor.nix"}, "run": "true"},
                {"cutor.nix": _shell(f"lru-{n}-{tag}")},
            ),
            f"lru-{n}",
        )
        wait_done(spool, f"lru-{n}", timeout=120)
        keys.append(stage(spool, f"lru-{n}", "dependencies")["key"])
    sizes = [build_record(spool, k)["closure_size"] for k in keys]
    # Room for the newest alone: the two older ones go, oldest first.
    done = cli(spool, "gc", "--max-size", str(max(sizes)), "--no-collect", "--json")
    report = json.loads(done.stdout)
    assert [e["key"] for e in report["evicted"]] == keys[:2]
    assert [e.name for e in build_entries(spool)] == [keys[2]]


def _separate_store_submission(tmp_path: Path, tag: str) -> Path:
    tool = (
        f'(pkgs.runCommand "xstore-tool-{tag}" {{ }} '
        f"''mkdir -p $out/bin; printf '#!/bin/sh\\necho tool-{tag}\\n' > $out/bin/xtool; chmod +x $out/bin/xtool'')"
    )
    return make_submission(
        tmp_path,
        f"x-{tag}",
        {"dependencies": {"nix": "cutor.nix"}, "run": "xtool; python3 -c 'print(1 + 1)'"},
        {"cutor.nix": _shell(f"xstore-{tag}", tool)},
    )


def test_executor_with_its_own_store_substitutes_from_the_spool_cache(
    spool: Path, tmp_path: Path, executors: Any, builders: Any
) -> None:
    """The builder has a store of its own (rooted in tmp_path, as another host's would be); the
    executor uses this host's /nix/store, which has never seen the environment."""
    nix_config(spool)
    builder_store = tmp_path / "builder-store"
    builders(spool, "--nix-store", str(builder_store))
    executors(spool)
    tag = unique()
    drop(spool, _separate_store_submission(tmp_path, tag), "xstore")
    wait_done(spool, "xstore", timeout=180)

    assert result(spool, "xstore")["outcome"] == "ok", result(spool, "xstore")
    assert stage(spool, "xstore", "run")["stdout"] == f"tool-{tag}\n2\n"
    deps = stage(spool, "xstore", "dependencies")
    assert deps["environment"]["substituted"] is True
    record = build_record(spool, deps["key"])
    env_path = record["env_path"]
    assert (builder_store / env_path.lstrip("/")).exists()  # built there
    info = json.loads(nix("nix", "path-info", "--json", "--sigs", env_path).stdout)
    (signer,) = {sig.partition(":")[0] for sig in info[0]["signatures"]}  # realised here from the cache
    assert (spool / "builds" / "cache" / "keys" / f"{signer}.pub").exists()
    root = Path("/nix/var/nix/gcroots/cutor-spool")
    assert any(root.glob(f"*/substituted/{deps['key']}"))  # rooted on the executor's side too

    drop(spool, _separate_store_submission(tmp_path / "again", tag), "xstore-again")
    wait_done(spool, "xstore-again", timeout=60)
    again = stage(spool, "xstore-again", "dependencies")
    assert again["source"] == "cached" and again["environment"]["substituted"] is False


@pytest.mark.slow  # ~33 s: its executor stops only after the 30 s grace
def test_executor_refuses_a_cache_not_signed_by_a_trusted_key(
    spool: Path, tmp_path: Path, executors: Any, builders: Any
) -> None:
    stranger = "someone-else-1:" + base64.b64encode(os.urandom(32)).decode()
    nix_config(spool, trusted_public_keys=[stranger])
    builders(spool, "--nix-store", str(tmp_path / "builder-store"))
    executors(spool)
    tag = unique()
    drop(spool, _separate_store_submission(tmp_path, tag), "untrusted")

    def refusals() -> list[str]:
        found = []
        for events in spool.glob("*/untrusted*/result/events.jsonl"):
            for line in events.read_text().splitlines():
                event = json.loads(line)
                if event.get("event") == "system_failure":
                    found.append(event["reason"])
        return found

    # Not the submission's fault: a system failure (retried, then `error`), never a run.
    wait_for(lambda: bool(refusals()), 180, "the executor to refuse the cache")
    assert "is not signed by any of the keys in 'trusted-public-keys'" in refusals()[0]
    # The executor evicts an environment it cannot substitute and asks once for a rebuild (a
    # builder may have been re-keyed): the entry may be gone from builds/done/ for a moment.
    published: list[str] = []

    def read_env_path() -> bool:
        try:
            published.append(build_record(spool, build_entries(spool)[0].name)["env_path"])
        except (IndexError, FileNotFoundError):
            return False
        return True

    wait_for(read_env_path, 120, "the environment to be published again")
    assert not Path(published[0]).exists()  # nothing unsigned entered this store
    assert not list(spool.glob("*/untrusted*/result/run.json"))
