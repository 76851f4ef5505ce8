"""The shape of the package, checked as the issue that set it asks: no import cycle joins two parts
(a part is a subpackage or a root module), no module past 450 lines, no function graded D or worse
by radon. The layers themselves are import-linter's contracts (pyproject.toml), run by
scripts/test.sh; these are the rules it cannot state."""

from __future__ import annotations

from pathlib import Path

import grimp
from radon.complexity import cc_rank, cc_visit

PACKAGE = Path(__file__).resolve().parent.parent / "cutor_spool"
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
