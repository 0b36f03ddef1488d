"""Imports point one way: every module of the package sits in a layer and imports only from its
own layer or the ones below. A new module fails here until it is given a layer."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "gateway"

# Lowest first. A module may import from its own layer and the layers before it.
LAYERS: list[tuple[str, set[str]]] = [
    ("foundations: no gateway imports, or only each other", {
        "errors", "untrusted", "yamlpos", "schema", "completions",
        "providers.litellm_data", "money.budget_scripts", "money.quota_scripts",
        "fleet_scripts", "book", "records.usage_log", "records.metrics",
    }),
    ("pure: the configuration and the rules read from it", {
        "config", "output_limit", "config_view", "widening", "auth", "routing", "cooldown",
        "balance",
        "retries", "request", "answer", "validation", "money.cost", "money.tokens",
        "money.worst_case", "forms.base", "forms.openai", "forms.anthropic",
        "forms.responses",
    }),
    ("I/O: the store, money, cache, records, providers, the server's parts", {
        "store", "embedded_store", "money.ledger", "money.budget", "money.quotas",
        "money.meter", "fleet", "alerts", "cache",
        "records.records", "providers.base", "providers.build", "providers.sessions",
        "providers.adapters",
        "providers.upstream", "providers.openai_compat", "providers.anthropic_api",
        "providers.anthropic_stream", "providers.anthropic_translate",
        "providers.via_litellm", "providers.messages_translate", "providers.messages_stream",
        "providers.messages_via_chat", "providers.openai_responses", "conversations",
        "providers.responses_translate", "providers.responses_stream",
        "providers.responses_via_chat", "providers.via_chat",
        "server.overload", "server.logs", "server.accept_loop", "server.event_stream",
    }),
    ("one request's path: what lives for the process, the chain, the context", {
        "services", "fallbacks", "money.watch", "context", "streaming",
    }),
    ("the request story", {"pipeline"}),
    ("surfaces: wire formats", {
        "surfaces.base", "surfaces.openai", "surfaces.openai_chat",
        "surfaces.openai_embeddings", "surfaces.anthropic", "surfaces.anthropic_messages",
        "surfaces.openai_responses",
    }),
    ("HTTP: routes, the app, reload", {
        "routes", "admin", "reload", "app", "server.http_protocol", "server.supervisor",
    }),
    ("the command line and the demo", {
        "cli", "__main__", "demo.demo", "demo.mockprovider", "demo.mockwire", "demo.fitting",
        "mockprovider",
    }),
]


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            continue  # package docstrings only
        found[".".join(parts)] = path
    return found


def _imported(path: Path, modules: dict[str, Path]) -> set[str]:
    """The gateway modules `path` imports, anywhere in it (lazy imports included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "gateway" or node.module.startswith("gateway."):
                base = node.module.removeprefix("gateway").lstrip(".")
                for alias in node.names:
                    name = f"{base}.{alias.name}" if base else alias.name
                    out.add(name if name in modules else base)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("gateway."):
                    out.add(alias.name.removeprefix("gateway."))
    return {name for name in out if name in modules}


def test_every_module_has_a_layer() -> None:
    layered = set().union(*(names for _, names in LAYERS))
    missing = sorted(set(_modules()) - layered)
    assert not missing, f"give these modules a layer in tests/test_layering.py: {missing}"
    gone = sorted(layered - set(_modules()))
    assert not gone, f"these modules no longer exist; remove them from LAYERS: {gone}"


def test_no_module_imports_upward() -> None:
    modules = _modules()
    layer_of = {name: i for i, (_, names) in enumerate(LAYERS) for name in names}
    upward = []
    for name, path in sorted(modules.items()):
        for target in sorted(_imported(path, modules)):
            if layer_of.get(target, 0) > layer_of.get(name, 0):
                upward.append(f"{name} ({LAYERS[layer_of[name]][0].split(':')[0]}) imports "
                              f"{target} ({LAYERS[layer_of[target]][0].split(':')[0]})")
    assert not upward, "imports that point upward:\n" + "\n".join(upward)


def _drawn() -> set[str]:
    """The modules the README's *Development* section draws, as dotted names."""
    readme = (PACKAGE.parent / "README.md").read_text()
    section = readme[readme.index("## Development"):]
    tree = section[section.index("```\ngateway/\n") + 4:]
    tree = tree[:tree.index("```")]
    drawn, folder = set(), ""
    for line in tree.splitlines()[1:]:
        depth = (len(line) - len(line.lstrip())) // 2
        first = line.split()[0] if line.split() else "#"
        if first.startswith("#"):
            continue
        if depth == 1:
            folder = first[:-1] if first.endswith("/") else ""
            if folder:
                continue
        for word in line.split():
            if word.endswith(".py"):
                name = word.removesuffix(".py")
                drawn.add(f"{folder}.{name}" if depth == 2 and folder else name)
            elif drawn and not word.endswith(".py"):
                break  # the description begins
    return drawn


def test_the_readme_draws_every_module() -> None:
    drawn, real = _drawn(), set(_modules())
    assert not real - drawn, f"add to README's Development tree: {sorted(real - drawn)}"
    assert not drawn - real, f"remove from README's Development tree: {sorted(drawn - real)}"
