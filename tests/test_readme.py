"""The README is the front door: its reference, its router.yaml and its snippets stay true."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from pydantic import BaseModel

from gateway.schema import RouterFile, Settings

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
PLACEHOLDER = {"providers": "<name>", "models": "<name>", "tiers": "<name>", "keys": "[]"}


def code_blocks(language: str, section: str) -> list[str]:
    """The fenced blocks of one language inside one `## section` of the README."""
    start = README.index(f"\n## {section}\n")
    end = README.find("\n## ", start + 1)
    return re.findall(rf"```{language}\n(.*?)```", README[start:end], re.S)


def reference_rows() -> dict[str, str]:
    rows = re.findall(r"^\| `([^`]+)` \| (.*) \| (.*) \|$", README, re.M)
    return {field: default for field, _meaning, default in rows}


def leaf_fields(model: type[BaseModel], prefix: str) -> dict[str, object]:
    """Every field an operator can write, dotted as the README writes it, with its default."""
    fields: dict[str, object] = {}
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and \
                annotation.__name__ != "PriceSpec":
            fields.update(leaf_fields(annotation, f"{path}."))
        else:
            fields[path] = info.default
    return fields


def test_the_reference_has_a_row_for_every_field_with_its_default() -> None:
    rows = reference_rows()
    expected = leaf_fields(Settings, "settings.")
    for section, placeholder in PLACEHOLDER.items():
        annotation = RouterFile.model_fields[section].annotation
        item = [arg for arg in annotation.__args__ if arg is not Ellipsis][-1]
        joiner = "" if placeholder == "[]" else "."
        if isinstance(item, type) and issubclass(item, BaseModel):
            expected.update(leaf_fields(item, f"{section}{joiner}{placeholder}."))
        else:
            expected[f"{section}.{placeholder}"] = None
    assert sorted(set(expected) - set(rows)) == []
    for field, default in expected.items():
        if isinstance(default, bool):
            assert rows[field] == f"`{str(default).lower()}`", field
        elif isinstance(default, int):
            assert rows[field] == f"`{default}`", field
        elif isinstance(default, float):
            assert rows[field] == f"`{default:g}`", field
        elif isinstance(default, str):
            assert rows[field] == (f"`{default}`" if default else "empty"), field


def test_the_readme_router_yaml_passes_gateway_check(tmp_path: Path) -> None:
    (example,) = code_blocks("yaml", "router.yaml")
    (tmp_path / "router.yaml").write_text(example)
    env = {**os.environ, "ANTHROPIC_API_KEY": "a", "OPENAI_API_KEY": "o", "GROQ_API_KEY": "g",
           "OPENAI_EU_KEY": "e"}
    checked = subprocess.run([sys.executable, "-m", "gateway", "check", "--config",
                              str(tmp_path / "router.yaml")], capture_output=True, text=True,
                             env=env, timeout=60)
    assert checked.returncode == 0, checked.stderr
    assert "fast: gpt-4o-mini -> llama-groq -> llama-local" in checked.stdout
    assert "unusable" not in checked.stdout
