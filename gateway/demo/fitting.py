"""A value that fits a JSON Schema, for the mock's structured answers and tool arguments.

Structured-output libraries (the `openai` SDK's `parse`, instructor, pydantic-ai) send
a schema and validate the answer against it, so the mock answers with a value built
from the schema itself: every property, the first enum value, the first branch of an
anyOf that is not null, strings of the allowed length, numbers within their bounds.
Strings are "from MODEL", so a test can tell which model answered. Pure; no I/O.
"""

from __future__ import annotations

import math
from typing import Any

# Recursive schemas (a tree of nodes) end here: optional parts left out, arrays empty.
MAX_DEPTH = 6
FORMATS = {"date-time": "2026-01-01T00:00:00Z", "date": "2026-01-01", "time": "00:00:00",
           "email": "mock@example.com", "uri": "https://example.com/",
           "uuid": "00000000-0000-4000-8000-000000000000", "ipv4": "127.0.0.1"}


def fitting(schema: Any, model: str) -> Any:
    """A value of `schema` (a JSON Schema; $refs resolved within it)."""
    return _Builder(schema if isinstance(schema, dict) else {}, model).value(schema, 0)


class _Builder:
    def __init__(self, root: dict[str, Any], model: str):
        self.root, self.model = root, model

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        ref = schema.get("$ref")
        for _ in range(32):  # a $ref to a $ref: bounded, in case of a cycle
            if not isinstance(ref, str) or not ref.startswith("#/"):
                return schema
            target: Any = self.root
            for part in ref[2:].split("/"):
                target = target.get(part, {}) if isinstance(target, dict) else {}
            schema = {**{k: v for k, v in schema.items() if k != "$ref"}, **target}
            ref = target.get("$ref") if isinstance(target, dict) else None
        return schema

    def value(self, schema: Any, depth: int) -> Any:
        if not isinstance(schema, dict):
            return f"from {self.model}"  # `true` or no schema: anything fits
        schema = self.resolve(schema)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return schema["enum"][0]
        if "default" in schema and depth > 0:
            return schema["default"]
        for combinator in ("anyOf", "oneOf"):
            branches = schema.get(combinator)
            if isinstance(branches, list) and branches:
                chosen = next((b for b in branches if not _is_null(self.resolve(b))), branches[0])
                return self.value(chosen, depth)
        if isinstance(schema.get("allOf"), list):
            merged: dict[str, Any] = {}
            for part in schema["allOf"]:
                merged.update(self.resolve(part) if isinstance(part, dict) else {})
            return self.value({**merged, **{k: v for k, v in schema.items() if k != "allOf"}},
                              depth)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            kind = "object" if "properties" in schema else "string"
        return self.typed(str(kind), schema, depth)

    def typed(self, kind: str, schema: dict[str, Any], depth: int) -> Any:
        if kind == "object":
            return self.object(schema, depth)
        if kind == "array":
            items = schema.get("prefixItems") or []
            count = max(int(schema.get("minItems") or 0), 0 if depth >= MAX_DEPTH else 1)
            count = min(count, int(schema.get("maxItems", count)))
            if items:
                return [self.value(item, depth + 1) for item in items][:max(count, len(items))]
            return [self.value(schema.get("items"), depth + 1) for _ in range(count)]
        if kind in ("integer", "number"):
            return _number(schema, kind == "integer")
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        return _string(schema, self.model)

    def object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties = schema.get("properties")
        if not isinstance(properties, dict) or not properties:
            # A free-form object: one property, unless the schema allows none.
            return {} if schema.get("additionalProperties") is False else {
                "answer": f"from {self.model}"}
        required = set(schema.get("required") or ())
        return {name: self.value(sub, depth + 1) for name, sub in properties.items()
                if depth < MAX_DEPTH or name in required}


def _is_null(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("type") == "null"


def _number(schema: dict[str, Any], integer: bool) -> int | float:
    """1 (or 1.5), moved inside the bounds: their middle when both are given."""
    low = _bound(schema, "minimum", "exclusiveMinimum")
    high = _bound(schema, "maximum", "exclusiveMaximum")
    if integer:
        value = 1
        if low is not None:
            value = max(value, math.floor(low[0]) + 1 if low[1] else math.ceil(low[0]))
        if high is not None:
            value = min(value, math.ceil(high[0]) - 1 if high[1] else math.floor(high[0]))
        return value
    if low is not None and high is not None:
        return (low[0] + high[0]) / 2
    if low is not None and low[0] >= 1.5:
        return low[0] + 1
    if high is not None and high[0] <= 1.5:
        return high[0] - 1
    return 1.5


def _bound(schema: dict[str, Any], inclusive: str, exclusive: str) -> tuple[float, bool] | None:
    """A bound and whether it is exclusive (2020-12's number form only)."""
    for name, is_exclusive in ((exclusive, True), (inclusive, False)):
        value = schema.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value), is_exclusive
    return None


def _string(schema: dict[str, Any], model: str) -> str:
    text = FORMATS.get(str(schema.get("format")), f"from {model}")
    shortest, longest = schema.get("minLength"), schema.get("maxLength")
    if isinstance(shortest, int) and len(text) < shortest:
        text = text.ljust(shortest, "x")
    if isinstance(longest, int):
        text = text[:longest]
    return text
