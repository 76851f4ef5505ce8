"""The shape of the package, checked as the issue that set it asks: no import cycle joins two parts
(a part is a subpackage or a root module), no module past 450 lines, no function graded D or worse
by radon. The layers themselves are import-linter's contracts (pyproject.toml), run by
scripts/test.sh; these are the rules it cannot state."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import grimp
from radon.complexity import cc_rank, cc_visit

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "cutor_spool"
MAX_LINES = 450


def part(module: str) -> str:
    """cutor_spool.runner.judge.x -> cutor_spool.runner; cutor_spool.atomic -> cutor_spool.atomic."""
    return ".".join(module.split(".")[:2])


def test_no_import_cycle_joins_two_parts() -> None:
    graph = grimp.build_graph("cutor_spool")
    edges: dict[str, set[str]] = {}
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            a, b = part(module), part(imported)
            if a != b and "cutor_spool" not in (a, b):  # the package's face holds only __version__
                edges.setdefault(a, set()).add(b)
    cycles = []
    for start in edges:
        seen, stack = set(), [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in edges.get(node, ()):
                if nxt == start:
                    cycles.append(" -> ".join([*path, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    assert cycles == []


def test_no_module_is_too_long() -> None:
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_no_function_is_graded_d_or_worse() -> None:
    complex_ = [
        f"{path.relative_to(PACKAGE)}:{block.lineno} {block.name} {cc_rank(block.complexity)} ({block.complexity})"
        for path in sorted(PACKAGE.rglob("*.py"))
        for block in cc_visit(path.read_text())
        if cc_rank(block.complexity) not in "ABC"
    ]
    assert complex_ == []


def test_every_root_module_is_in_the_kernel_contract() -> None:
    """A root module is the shared kernel (docs/architecture.md): import-linter must hold it to
    importing no part, which it does only for the modules its contract lists."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    kernel = next(c for c in contracts if c["name"].startswith("The shared kernel"))
    roots = {f"cutor_spool.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")}
    assert roots - set(kernel["source_modules"]) == set()


def test_every_section_the_code_points_to_exists() -> None:
    """`README, "CPU pinning"` or `docs/judge.md, "Graders"` in a docstring or comment (spool.yaml's
    default text included) names a heading of that document."""
    missing = []
    for source in PACKAGE.rglob("*.py"):
        text = source.read_text()
        for document, section in re.findall(r'(README|docs/[\w-]+\.md)[,:] "([^"]+)"', text):
            path = ROOT / ("README.md" if document == "README" else document)
            headings = {line.lstrip("#").strip() for line in path.read_text().splitlines() if line.startswith("#")}
            if section not in headings:
                missing.append(f"{source.relative_to(ROOT)}: {document}, {section!r}")
    assert missing == []
