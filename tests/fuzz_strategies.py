"""Hypothesis strategies for hostile submissions: submission.yaml documents (structured, mangled,
and raw bytes) and directory trees (odd names, traversal, symlinks, FIFOs, devices, big files)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

FIELDS = [
    "dependencies",
    "compile",
    "run",
    "files",
    "stdin",
    "stdin_file",
    "args",
    "env",
    "limits",
    "network",
    "tests",
    "checker",
    "subtasks",
    "scoring",
    "short_circuit",
]
LIMIT_KEYS = ["cpu_time", "wall_time", "memory", "processes", "file_size", "open_files", "stack", "output"]
FAST_SCRIPTS = ["echo hi", "true", "exit 3", "cat", "printf '%s' \"$@\"", "ls -la", "echo $HOME", "run.sh"]
NAMES = [
    "a",
    "b.txt",
    "run.sh",
    "compile.sh",
    "sub/c",
    "../x",
    "/etc/passwd",
    "./a",
    "a/../../b",
    "",
    ".",
    "..",
    "x" * 300,
    "caf\u00e9",
    "tab\tname",
    "new\nline",
    "nul\x00byte",
    ".hidden",
    "result",
    ".lease",
    ".ready",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["2s", "1.5m", "256MiB", "-1s", "1e9GiB", "fast", "0", "10x", "1GiB", "7d", "500ms"]),
)


def nested(depth: int = 2) -> st.SearchStrategy[Any]:
    if depth == 0:
        return scalars
    return st.one_of(
        scalars,
        st.lists(nested(depth - 1), max_size=4),
        st.dictionaries(st.text(max_size=10), nested(depth - 1), max_size=4),
    )


limits_value = st.dictionaries(st.sampled_from([*LIMIT_KEYS, "ram", "cpu"]), scalars, max_size=4)
structured = st.fixed_dictionaries(
    {},
    optional={
        "run": st.one_of(
            st.sampled_from(FAST_SCRIPTS), st.fixed_dictionaries({"file": st.sampled_from(NAMES)}), scalars
        ),
        "compile": st.one_of(st.none(), st.sampled_from(["true", "exit 1", "gcc -o x x.c"]), nested(1)),
        "dependencies": st.one_of(
            st.lists(st.sampled_from(["python3", "gcc", "bad name", "x.y.z", "a;b", ""]), max_size=3), nested(1)
        ),
        "files": st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(NAMES), "content": st.text(max_size=20)},
                optional={"encoding": st.sampled_from(["utf8", "base64", "hex", "rot13"]), "executable": scalars},
            ),
            max_size=3,
        ),
        "stdin": scalars,
        "stdin_file": st.sampled_from(NAMES),
        "args": st.one_of(st.lists(st.text(max_size=8), max_size=3), scalars),
        "env": st.dictionaries(st.sampled_from(["A", "PATH", "1X", "", "B-C", "LD_PRELOAD"]), scalars, max_size=3),
        "limits": st.dictionaries(
            st.sampled_from(["run", "compile", "tests", "dependencies", "checker", "bogus"]), limits_value, max_size=3
        ),
        "network": scalars,
        "tests": st.one_of(
            st.none(),
            st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "name": st.sampled_from(["t1", "t2", "bad name", ""]),
                        "input": scalars,
                        "output": scalars,
                        "input_file": st.sampled_from(NAMES),
                        "points": scalars,
                    },
                ),
                max_size=3,
            ),
        ),
        "checker": st.one_of(st.sampled_from(["exact", "tokens", "float", "program", "magic"]), nested(1)),
        "subtasks": nested(2),
        "scoring": scalars,
        "short_circuit": scalars,
        "bogus_key": scalars,
    },
)


# Submissions that are valid, or nearly: they get past validation and run, so the fuzz reaches the
# sandbox and the result writing, not just the validator.
valid_ish = st.fixed_dictionaries(
    {"run": st.sampled_from(FAST_SCRIPTS[:-1])},
    optional={
        "args": st.lists(st.text(st.characters(blacklist_categories=["Cs", "Cc"]), max_size=8), max_size=3),
        "env": st.dictionaries(
            st.sampled_from(["A", "B_2", "MODE"]),
            st.text(st.characters(blacklist_categories=["Cs", "Cc"]), max_size=8),
            max_size=2,
        ),
        "stdin": st.text(st.characters(blacklist_categories=["Cs"]), max_size=50),
        "files": st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(["a.txt", "d/b.txt", "c"]), "content": st.text(max_size=20)}
            ),
            max_size=1,
        ),
        "limits": st.fixed_dictionaries(
            {},
            optional={
                "run": st.fixed_dictionaries(
                    {},
                    optional={
                        "cpu_time": st.sampled_from(["1s", "500ms", 2]),
                        "memory": st.sampled_from(["64MiB", "128MiB"]),
                        "output": st.sampled_from(["1KiB", "64KiB"]),
                        "processes": st.integers(4, 64),
                    },
                )
            },
        ),
    },
)


def _yaml(doc: Any) -> bytes:
    return yaml.safe_dump(doc, allow_unicode=True).encode("utf-8", "surrogatepass")


yaml_documents = st.one_of(
    valid_ish.map(_yaml),
    valid_ish.map(_yaml),
    structured.map(_yaml),
    st.dictionaries(st.sampled_from([*FIELDS, "x", "limits.run"]), nested(3), max_size=6).map(_yaml),
    nested(3).map(_yaml),
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from(
        [
            b"run: [unclosed",
            b"a: &a [*a]",
            b"run: !!python/object:os.system ls",
            b"\xff\xfe\x00",
            b"- 1\n- 2\n",
            b"run: echo\nrun: echo\n",
            b"{" * 50,
            b"run: 'x'\n" * 3,
        ]
    ),
)


@dataclass(frozen=True)
class Entry:
    kind: str  # file, dir, symlink, fifo, device, big
    name: bytes
    data: bytes = b""
    target: str = ""


entry_names = st.one_of(
    st.sampled_from(
        [
            b"a",
            b"b.txt",
            b"run.sh",
            b"sub/c",
            b"sub/deeper/d",
            b"input.txt",
            b"\xff\xfe",
            b"caf\xe9",
            b"x" * 255,
            b"result",
            b".lease",
            b".hidden",
            b"sub/.x",
            b"a b",
            b"tests/1.in",
        ]
    ),
    st.binary(min_size=1, max_size=12).filter(lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b"..")),
)
entries = st.lists(
    st.one_of(
        st.builds(Entry, st.just("file"), entry_names, st.binary(max_size=64)),
        st.builds(Entry, st.just("dir"), entry_names),
        st.builds(
            Entry,
            st.just("symlink"),
            entry_names,
            st.just(b""),
            st.sampled_from(["/etc/shadow", "../../..", "a", "/proc/self/root", "sub"]),
        ),
        st.builds(Entry, st.just("fifo"), entry_names),
        st.builds(Entry, st.just("device"), entry_names),
        st.builds(Entry, st.just("big"), entry_names),
    ),
    max_size=6,
)


clean_entries = st.lists(
    st.one_of(
        st.builds(
            Entry, st.just("file"), st.sampled_from([b"a", b"b.txt", b"sub/c", b"data/in.txt"]), st.binary(max_size=64)
        ),
        st.builds(Entry, st.just("dir"), st.sampled_from([b"empty", b"sub/deeper"])),
    ),
    max_size=4,
)
# A submission as a pair (submission.yaml or None, tree): about a third hostile in every way, the
# rest valid or nearly so with a clean tree, so that the runs, not just the validator, get fuzzed.
submissions = st.one_of(
    st.tuples(st.one_of(st.none(), yaml_documents), entries),
    st.tuples(valid_ish.map(_yaml), clean_entries),
    st.tuples(valid_ish.map(_yaml), clean_entries),
)


def materialise(root: Path, yaml_bytes: bytes | None, tree: list[Entry]) -> None:
    """Writes the generated submission as a directory (best effort: an entry whose path collides
    with an earlier one is skipped, as a real client could not make both either)."""
    root.mkdir(parents=True)
    base = os.fsencode(root)
    if yaml_bytes is not None:
        (root / "submission.yaml").write_bytes(yaml_bytes)
    for item in tree:
        path = base + b"/" + item.name
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if item.kind == "file":
                with open(path, "xb") as fh:
                    fh.write(item.data)
            elif item.kind == "big":
                with open(path, "xb") as fh:
                    fh.truncate(3 << 20)  # sparse, past the tests' 2 MiB submission limit
            elif item.kind == "dir":
                os.makedirs(path)
            elif item.kind == "symlink":
                os.symlink(item.target, path)
            elif item.kind == "fifo":
                os.mkfifo(path)
            elif item.kind == "device":
                os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            continue
