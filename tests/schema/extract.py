"""Extract the response schemas of OpenAI's OpenAPI description that the gateway answers with.

    git -C <openai-openapi clone> show HEAD:openapi.json > /tmp/openapi.json
    python3 tests/schema/extract.py /tmp/openapi.json <commit> > tests/schema/openai_chat.json

Writes one JSON Schema (draft 2020-12) whose `$defs` hold the named components and
everything they reference, with the spec's commit recorded, so that the tests check the
gateway against a fixed, reviewable copy rather than whatever the spec says today.

OpenAPI 3.1 is JSON Schema 2020-12 with a few leftovers that `jsonschema` reads
differently; they are translated here, and the few places where the description is
narrower than what OpenAI's own API and SDK accept are relaxed, each named in RELAXED.
"""

from __future__ import annotations

import json
import sys
from typing import Any

ROOTS = ("CreateChatCompletionResponse", "CreateChatCompletionStreamResponse",
         "CreateEmbeddingResponse", "ListModelsResponse", "Model", "ErrorResponse",
         "Response", "ResponseStreamEvent")
# Documentation only: dropped to keep the vendored file small and its diffs readable.
DROPPED = frozenset({"description", "example", "examples", "title", "deprecated"})
PREFIX = "#/components/schemas/"

# Where the description is narrower than the API it describes. Each entry: the component,
# the path of keys to the property inside it, what it becomes, and why.
RELAXED: list[tuple[str, tuple[str, ...], dict[str, Any], str]] = [
    ("CreateChatCompletionResponse", ("properties", "system_fingerprint"),
     {"anyOf": [{"type": "string"}, {"type": "null"}]},
     "the API sends null for models without a fingerprint; the SDK types it Optional[str]"),
    ("CreateChatCompletionStreamResponse", ("properties", "system_fingerprint"),
     {"anyOf": [{"type": "string"}, {"type": "null"}]},
     "as above, in every chunk"),
    ("Embedding", ("properties", "embedding"),
     {"anyOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string"}]},
     "with encoding_format=base64 (what the SDK asks for by default) the API sends the "
     "vector as a base64 string, which the description does not model"),
]


def translate(node: Any) -> Any:
    """One node, OpenAPI -> JSON Schema 2020-12, recursively."""
    if isinstance(node, list):
        return [translate(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in DROPPED or key.startswith("x-") or key == "discriminator":
            # discriminator: an OpenAPI hint for code generators; the oneOf beside it already
            # decides (each branch's `type` has a one-value enum), and jsonschema ignores it.
            continue
        if key == "$ref":
            out[key] = "#/$defs/" + value.removeprefix(PREFIX)
        elif key == "properties":  # property names are data, not keywords: keep them all
            out[key] = {name: translate(schema) for name, schema in value.items()}
        else:
            out[key] = translate(value)
    if out.pop("nullable", False):
        # OpenAPI 3.0's `nullable`, still used in the stream chunk's schema: 2020-12 has no
        # such keyword (jsonschema would ignore it and refuse every null), so it becomes
        # "this, or null".
        return {"anyOf": [out, {"type": "null"}]}
    return out


def references(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"].removeprefix(PREFIX)} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            found |= references(value)
        return found
    if isinstance(node, list):
        return set().union(*(references(item) for item in node)) if node else set()
    return set()


def extract(spec: dict[str, Any], commit: str) -> dict[str, Any]:
    components = spec["components"]["schemas"]
    wanted: set[str] = set()
    todo = list(ROOTS)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo += sorted(references(components[name]))
    defs = {name: translate(components[name]) for name in sorted(wanted)}
    for component, path, replacement, _why in RELAXED:
        parent = defs[component]
        for key in path[:-1]:
            parent = parent[key]
        assert path[-1] in parent, f"{component}: {'.'.join(path)} is gone from the spec"
        parent[path[-1]] = replacement
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$comment": f"extracted by tests/schema/extract.py from openai/openai-openapi "
                        f"openapi.json at commit {commit} (OpenAPI {spec['openapi']}, API "
                        f"version {spec['info']['version']})",
            "x-relaxed": [f"{c}.{'.'.join(p)}: {why}" for c, p, _r, why in RELAXED],
            "$defs": defs}


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: extract.py OPENAPI_JSON COMMIT > tests/schema/openai_chat.json")
    with open(sys.argv[1], encoding="utf-8") as file:
        spec = json.load(file)
    json.dump(extract(spec, sys.argv[2]), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
