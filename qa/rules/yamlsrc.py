"""YAML with line numbers. Rule files are written by compliance staff, so every error must
point at the file and line; PyYAML's node marks carry that, and this module keeps them on the
loaded mappings and lists.

A rule file is small; one that expands into more than :data:`MAX_NODES` values (aliases
referring to aliases: a "billion laughs" file) or nests deeper than :data:`MAX_DEPTH` levels is
refused with its file and line before it can take the machine's memory or stack."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import RuleError

MAX_NODES = 50_000  # values in one file once aliases are expanded; the default pack's largest has ~300
MAX_DEPTH = 64  # nesting levels; a deep condition is a few dozen


class YMap(dict):
    """A mapping that remembers the line of itself and of each key (1-based)."""

    line: int = 0
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class YList(list):
    """A list that remembers its line and the line of each item (1-based)."""

    line: int = 0
    item_lines: list[int]


class _Budget:
    def __init__(self, path: str):
        self.path, self.nodes = path, 0

    def spend(self, node: yaml.Node, depth: int) -> None:
        self.nodes += 1
        line = node.start_mark.line + 1
        if self.nodes > MAX_NODES:
            raise RuleError(f"{self.path}:{line}: the file expands into more than {MAX_NODES} values "
                            "(aliases of aliases?); rule files are small", path=self.path)
        if depth > MAX_DEPTH:
            raise RuleError(f"{self.path}:{line}: nested deeper than {MAX_DEPTH} levels", path=self.path)


def _convert(loader: yaml.SafeLoader, node: yaml.Node, budget: _Budget, depth: int = 0) -> Any:
    budget.spend(node, depth)
    path = budget.path
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out = YMap()
        out.line = line
        out.key_lines = {}
        loader.flatten_mapping(node)
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise RuleError(f"{path}:{key_node.start_mark.line + 1}: keys must be text", path=path)
            key = loader.construct_object(key_node)
            key_line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                raise RuleError(f"{path}:{key_line}: keys must be text, got {key!r}", path=path)
            if key in out:
                raise RuleError(f"{path}:{key_line}: duplicate key {key!r} (first on line {out.key_lines[key]})",
                                path=path)
            out[key] = _convert(loader, value_node, budget, depth + 1)
            out.key_lines[key] = key_line
        return out
    if isinstance(node, yaml.SequenceNode):
        items = YList(_convert(loader, item, budget, depth + 1) for item in node.value)
        items.line = line
        items.item_lines = [item.start_mark.line + 1 for item in node.value]
        return items
    try:
        return loader.construct_object(node)
    except (ValueError, OverflowError) as e:  # a scalar YAML reads as a date or number that is none (2021-13-01)
        raise RuleError(f"{path}:{line}: {node.value!r} is not a valid value: {e}", path=path) from e


def load_yaml(path: Path) -> Any:
    """Parse one YAML file into plain values, YMap and YList; syntax errors name the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RuleError(f"{path}: cannot read: {e}", path=str(path)) from e
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        return _convert(loader, node, _Budget(str(path)))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise RuleError(f"{where}: invalid YAML: {e.problem or e.context}", path=str(path)) from e
    except yaml.YAMLError as e:
        raise RuleError(f"{path}: invalid YAML: {e}", path=str(path)) from e
    except RecursionError as e:  # the YAML composer recurses per level, before any budget applies
        raise RuleError(f"{path}: nested deeper than {MAX_DEPTH} levels", path=str(path)) from e
    finally:
        loader.dispose()
