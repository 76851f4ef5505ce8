"""Loading untrusted YAML: safe types only, no duplicate keys, bounded size after alias expansion."""

from __future__ import annotations

from typing import Any

import yaml

MAX_NODES = 200_000


class YamlProblem(ValueError):
    """The text is not acceptable YAML; `line` is 1-based when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message if line is None else f"line {line}: {message}")
        self.line = line


class _StrictLoader(yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader):  # type: ignore[misc]
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError as exc:
            raise YamlProblem("a mapping key must be a plain value", key_node.start_mark.line + 1) from exc
        if key in mapping:
            raise YamlProblem(f"duplicate key {key!r}", key_node.start_mark.line + 1)
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _count_nodes(value: Any, budget: int) -> int:
    """Counts nodes as a reader would see them with aliases expanded; stops past the budget
    (a "billion laughs" document is a small DAG that expands exponentially)."""
    stack = [value]
    seen = 0
    while stack:
        item = stack.pop()
        seen += 1
        if seen > budget:
            return seen
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return seen


def load_yaml(text: str) -> Any:
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - _StrictLoader is a SafeLoader
    except YamlProblem:
        raise
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise YamlProblem(f"{exc.problem or exc.context or 'malformed YAML'}", line) from exc
    except yaml.YAMLError as exc:
        raise YamlProblem(f"malformed YAML: {exc}") from exc
    except RecursionError as exc:
        raise YamlProblem("YAML nested too deeply") from exc
    if _count_nodes(data, MAX_NODES) > MAX_NODES:
        raise YamlProblem(f"YAML expands to more than {MAX_NODES} values (aliases?)")
    return data
