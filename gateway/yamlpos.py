"""Line numbers for dotted paths in a YAML document, so config errors point at the line."""

from __future__ import annotations

from typing import Any

import yaml


class PositionIndex:
    def __init__(self, text: str):
        self._root = yaml.compose(text, Loader=yaml.SafeLoader)
        self.duplicates: list[tuple[int, str]] = []
        self._find_duplicates(self._root, ())

    def line(self, loc: tuple[Any, ...]) -> int | None:
        """1-based line of the deepest node of `loc` present in the document."""
        node = self._root
        if node is None:
            return None
        for part in loc:
            child = _child(node, part)
            if child is None:
                break
            node = child
        return node.start_mark.line + 1

    def _find_duplicates(self, node: yaml.Node | None, loc: tuple[Any, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                if key.value in seen:
                    path = ".".join(str(p) for p in (*loc, key.value))
                    self.duplicates.append((key.start_mark.line + 1, f"{path}: duplicate key"))
                seen.add(key.value)
                self._find_duplicates(value, (*loc, key.value))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._find_duplicates(item, (*loc, i))


def _child(node: yaml.Node, part: Any) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        pairs: list[tuple[yaml.Node, yaml.Node]] = node.value  # the stubs say Any
        for key, value in pairs:
            if key.value == str(part):
                return value
    elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        items: list[yaml.Node] = node.value
        return items[part]
    return None
