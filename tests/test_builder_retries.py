"""A builder whose every attempt fails for a system reason gives up after max_attempts (found in
the demo, where a relative spool path gave Nix a file:// URL it could not open, and the builder
retried the same build 555 times in five minutes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import drop, make_submission, result, stage, wait_done
from nixtest import builders, need_nix, nix_config, spool_roots

from cutor_spool.atomic import read_lines

__all__ = ["builders", "spool_roots"]  # fixtures, imported for pytest


def test_a_system_failure_on_every_attempt_ends_after_max_attempts(
    spool: Path, tmp_path: Path, executors: Any, builders: Any, spool_roots: None
) -> None:
    need_nix()
    nix_config(spool, top={"max_attempts": 2})
    # A fault only a planted file can make here: where `nix copy` writes the cache's archives,
    # a file instead of a directory, so that every export fails (the builder itself starts).
    cache = spool / "builds" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "nar").write_text("not a directory: every export to the binary cache fails")
    builders(spool)
    executors(spool)
    drop(spool, make_submission(tmp_path, "s", {"dependencies": ["python3", "gzip"], "run": "echo never"}), "doomed")
    wait_done(spool, "doomed", timeout=180)
    status = result(spool, "doomed")
    assert (status["state"], status["outcome"]) == ("done", "dependency_failure")
    deps = stage(spool, "doomed", "dependencies")
    assert deps["build"]["status"] == "error"
    (build,) = [p for p in (spool / "builds" / "done").iterdir()]
    events = [r["event"] for r in read_lines(build / "attempts.jsonl")]
    assert events.count("claimed") == 2 and events.count("failed") == 1, events
