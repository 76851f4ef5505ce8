"""Language presets: `language: cpp17` in submission.yaml, from a table the spool holds.

A preset names a compile script (or none), a run script, the source file those scripts expect, its
limits for the compile and run stages, and its Nix dependencies (none: the host's /usr). The
shipped presets are data, `languages.yaml` beside this module; spool.yaml's `languages:` changes
the table (`LanguagesConfig`): an entry replaces the shipped one of its id (whole), `base: ID`
starts it from a shipped preset instead (deep-merged: only the keys it gives change), `{alias: ID}`
names another entry, and `ID: null` removes one.

A submission's own `compile`, `run` (its fields, or compile.sh/run.sh by convention),
`dependencies` and limits win, field by field and, for limits, key by key (`apply`). A preset's
limits are defaults, not asks: above the spool's `limits.maximum` they are lowered to it.

The resolution is here, in the kernel, and called by `runner/intake.py` alone, so that the executor
and `cutor-spool submit`/`validate` (which read a directory through the same intake) agree.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Set
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, RootModel, ValidationError, model_validator

from cutor_spool.limits import OPTIONAL_KEYS, Limits, LimitsSpec
from cutor_spool.submission import AttrPath, Id, RelName, StageLimitsSpec, Submission, Text
from cutor_spool.yamlload import load_yaml

SHIPPED = "languages.yaml"
Name = Annotated[str, Field(min_length=1, max_length=200)]
Command = Annotated[str, Field(min_length=1, max_length=4096)]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PresetLimits(_Strict):
    compile: LimitsSpec | None = None
    run: LimitsSpec | None = Field(default=None, description="the run stage's, and every test's under them")


class Preset(_Strict):
    """A resolved preset: what `language: ID` gives a submission."""

    name: Name | None = Field(default=None, description="the name people read (default: the id)")
    source: RelName = Field(description="the file the scripts compile or run, e.g. main.cpp, Main.java")
    compile: Text | None = Field(default=None, description="a shell script; none for a language run as it is")
    run: Text = Field(description="a shell script")
    dependencies: list[AttrPath] = Field(
        default_factory=list, description="nixpkgs attribute paths; none: the host's /usr"
    )
    limits: PresetLimits = PresetLimits()
    version_command: Command | None = Field(
        default=None, description="prints the toolchain's version on the host (`cutor-spool languages --versions`)"
    )


class LanguageEntry(_Strict):
    """An entry of a `languages:` table as written: a preset, a preset based on a shipped one
    (`base:`), or an alias (`alias:`). Whether it is complete is checked once merged."""

    alias: Id | None = Field(default=None, description="this id means that entry (nothing else may be given)")
    base: Id | None = Field(default=None, description="start from this shipped preset, changing what is given")
    name: Name | None = None
    source: RelName | None = None
    compile: Text | None = None
    run: Text | None = None
    dependencies: list[AttrPath] | None = None
    limits: PresetLimits | None = None
    version_command: Command | None = None

    @model_validator(mode="after")
    def _alias_alone(self) -> LanguageEntry:
        if self.alias is not None and self.model_fields_set - {"alias"}:
            raise ValueError("an alias gives nothing but `alias`")
        return self

    def written(self) -> dict[str, Any]:
        """The keys given, nested limits too (an explicit `compile: null` included)."""
        return self.model_dump(exclude_unset=True, exclude={"alias", "base"})


@dataclass(frozen=True)
class LanguageTable:
    presets: Mapping[str, Preset]  # id -> preset, in the table's order
    aliases: Mapping[str, str]  # alias -> id of a preset

    def resolve(self, name: str) -> tuple[str, Preset] | None:
        """The preset's id and the preset `name` means (an id or an alias), or None."""
        target = self.aliases.get(name, name)
        preset = self.presets.get(target)
        return None if preset is None else (target, preset)

    def known(self) -> list[str]:
        """Every name a submission may give, sorted: ids and aliases."""
        return sorted({*self.presets, *self.aliases})

    def aliases_of(self, preset_id: str) -> list[str]:
        return sorted(a for a, target in self.aliases.items() if target == preset_id)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` deep-merged into `base`: mappings key by key, anything else replaced."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _problem(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"])
        message = "missing: a preset needs it" if err["type"] == "missing" else err["msg"]
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def build_table(
    entries: Mapping[str, LanguageEntry | None], *, shipped: Mapping[str, LanguageEntry] | None = None
) -> LanguageTable:
    """The shipped entries with `entries` over them (ValueError: what is wrong, with the id)."""
    base_entries = dict(_shipped_entries() if shipped is None else shipped)
    table = dict(base_entries)
    for lang, entry in entries.items():
        if entry is None:
            if lang not in table:
                raise ValueError(f"{lang}: null removes a shipped language, but there is none of that id")
            del table[lang]
        else:
            table[lang] = entry
    presets: dict[str, Preset] = {}
    for lang, entry in table.items():
        if entry.alias is not None:
            continue
        data = entry.written()
        if entry.base is not None:
            base = base_entries.get(entry.base)
            if base is not None and base.alias is not None:
                base = base_entries.get(base.alias)
            if base is None or base.alias is not None:
                raise ValueError(f"{lang}: base {entry.base!r} is not a shipped language")
            data = _merge(base.written(), data)
        try:
            presets[lang] = Preset.model_validate(data)
        except ValidationError as exc:
            raise ValueError(f"{lang}: {_problem(exc)}") from None
    aliases: dict[str, str] = {}
    for lang, entry in table.items():
        if entry.alias is None:
            continue
        if entry.alias in presets:
            aliases[lang] = entry.alias
        elif lang in entries:  # the operator's own alias: a mistake to say
            raise ValueError(f"{lang}: alias of {entry.alias!r}, which is no language here (an alias names a preset)")
        # else: a shipped alias of a preset the operator removed goes with it
    return LanguageTable(presets, aliases)


@functools.cache
def _shipped_entries() -> dict[str, LanguageEntry]:
    text = resources.files("cutor_spool").joinpath(SHIPPED).read_text(encoding="utf-8")
    raw = load_yaml(text)
    return {str(lang): LanguageEntry.model_validate(entry) for lang, entry in raw.items()}


def shipped_table() -> LanguageTable:
    return _shipped_table()


@functools.cache
def _shipped_table() -> LanguageTable:
    return build_table({})


class LanguagesConfig(RootModel[dict[Id, LanguageEntry | None]]):
    """spool.yaml's `languages:`: entries over the shipped presets (see the module's doc)."""

    model_config = ConfigDict(frozen=True)
    root: dict[Id, LanguageEntry | None] = Field(default_factory=dict)
    _table: LanguageTable | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _builds(self) -> LanguagesConfig:
        self._table = build_table(self.root) if self.root else None
        return self

    def table(self) -> LanguageTable:
        return self._table if self._table is not None else shipped_table()


def _capped(spec: LimitsSpec | None, maximum: Limits) -> dict[str, Any]:
    """A preset's limits, each lowered to the spool's maximum (a preset is a default, not an ask)."""
    values = {} if spec is None else spec.values()
    for key, value in values.items():
        top = getattr(maximum, key)
        if key in OPTIONAL_KEYS:
            if top and (value == 0 or value > top):
                values[key] = top
        elif value > top:
            values[key] = top
    return values


def _layered(preset: LimitsSpec | None, own: LimitsSpec | None, maximum: Limits) -> LimitsSpec | None:
    values = {**_capped(preset, maximum), **({} if own is None else own.values())}
    return LimitsSpec(**values) if values else None


@dataclass(frozen=True)
class Applied:
    submission: Submission  # the submission with what the preset gives filled in
    source_needed: bool  # a preset script that reads the source runs first: its file must be there


def apply(sub: Submission, preset: Preset, *, own_files: Set[str], maximum: Limits) -> Applied:
    """`sub` with `preset` under it. `own_files`: the stages ("compile", "run") the submission
    has a conventional script file for (compile.sh, run.sh), which win as its fields do."""
    update: dict[str, Any] = {}
    preset_compile = sub.compile is None and "compile" not in own_files and preset.compile is not None
    preset_run = sub.run is None and "run" not in own_files
    if preset_compile:
        update["compile"] = preset.compile
    if preset_run:
        update["run"] = preset.run
    if "dependencies" not in sub.model_fields_set:
        update["dependencies"] = list(preset.dependencies)
    limits = sub.limits
    update["limits"] = StageLimitsSpec(
        dependencies=limits.dependencies,
        compile=_layered(preset.limits.compile, limits.compile, maximum),
        run=_layered(preset.limits.run, limits.run, maximum),
        tests=limits.tests,
        checker=limits.checker,
    )
    own_compile = sub.compile is not None or "compile" in own_files
    source_needed = preset_compile or (preset_run and not own_compile and preset.compile is None)
    return Applied(sub.model_copy(update=update), source_needed)
