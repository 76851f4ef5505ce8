"""`cutor-spool languages`: the language presets a submission may name (`language: ID`)."""

from __future__ import annotations

import shlex
import subprocess
from typing import Any

import click

from cutor_spool.cli.output import emit_json, say
from cutor_spool.config import load_config
from cutor_spool.languages import LanguageTable, Preset
from cutor_spool.runner.bwrap_layout import BASE_ENV

VERSION_TIMEOUT = 10.0


def host_version(preset: Preset) -> str | None:
    """The first line the preset's `version_command` prints on this host, with a stage's PATH (so
    the toolchain found is the one a stage without dependencies finds); None if it has none. A
    preset with Nix dependencies gets its toolchain from them, not from the host: it says so."""
    if preset.dependencies:
        return "from Nix: " + ", ".join(preset.dependencies)
    if preset.version_command is None:
        return None
    try:
        done = subprocess.run(
            shlex.split(preset.version_command),
            capture_output=True,
            timeout=VERSION_TIMEOUT,
            env={"PATH": BASE_ENV["PATH"], "LANG": "C.UTF-8", "HOME": "/nonexistent"},
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        return f"not available ({exc})"
    text = (done.stdout or done.stderr).decode("utf-8", "replace")
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if done.returncode != 0:
        return f"not available (exit {done.returncode}{': ' + line if line else ''})"
    return line or None


def rows(table: LanguageTable, *, versions: bool) -> list[dict[str, Any]]:
    out = []
    for lang, preset in table.presets.items():
        row: dict[str, Any] = {
            "id": lang,
            "name": preset.name or lang,
            "aliases": table.aliases_of(lang),
            "source": preset.source,
            "compile": preset.compile,
            "run": preset.run,
            "dependencies": list(preset.dependencies),
            "limits": {stage: spec.values() for stage, spec in preset.limits if spec is not None},
        }
        if versions:
            row["version"] = host_version(preset)
        out.append(row)
    return out


def _show(row: dict[str, Any]) -> None:
    aliases = f" (also: {', '.join(row['aliases'])})" if row["aliases"] else ""
    say(f"{row['id']:<10} {row['name']}{aliases}")
    if "version" in row:
        say(f"{'':<10} version: {row['version'] or '-'}")
    say(f"{'':<10} source:  {row['source']}")
    if row["compile"] is not None:
        say(f"{'':<10} compile: {row['compile'].strip()}")
    say(f"{'':<10} run:     {row['run'].strip()}")
    if row["dependencies"]:
        say(f"{'':<10} nix:     {' '.join(row['dependencies'])}")
    for stage, values in row["limits"].items():
        say(f"{'':<10} limits.{stage}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per preset.")
@click.option("--versions", is_flag=True, help="Also run each preset's version command on this host.")
@click.pass_context
def languages(ctx: click.Context, as_json: bool, versions: bool) -> None:
    """List the language presets (`language: ID` in submission.yaml): the shipped ones with the
    spool's spool.yaml `languages:` over them.

    \b
    A submission's own compile, run, dependencies and limits win over its preset's.
    --versions runs each preset's version_command (gcc --version, ...) on this host, with the
    PATH stages have: the toolchain a stage without Nix dependencies runs.
    """
    table = load_config(ctx.obj.spool).languages.table()
    listed = rows(table, versions=versions)
    if as_json:
        emit_json(listed)
        return
    for row in listed:
        _show(row)
    say(f"{len(listed)} language(s); a submission names one with `language: ID` (an id or an alias)")


commands: list[click.Command] = [languages]
