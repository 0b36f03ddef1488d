"""`gateway demo`: mock providers on loopback and a gateway routed to them, no secrets needed."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import tempfile
from pathlib import Path

import uvicorn

from gateway import embedded_store
from gateway.app import create_app
from gateway.config import load_config
from gateway.demo.mockprovider import MockProvider, Step
from gateway.server.logs import log_config

DEMO_KEY = "sk-gateway-demo"
TINY_KEY = "sk-gateway-demo-tiny"  # a budget of one micro-dollar: every request is refused

ROUTER_YAML = """\
providers:
  openai:    {{api_key: demo, api_base: "{mock}/v1"}}
  anthropic: {{api_key: demo, api_base: "{mock}"}}
  groq:      {{api_key: demo, api_base: "{mock}/openai/v1"}}
  ollama:    {{api_base: "{mock}"}}

models:
  gpt-4o-mini:   {{provider: openai, model: gpt-4o-mini}}
  claude-sonnet: {{provider: anthropic, model: claude-sonnet-4-5}}
  claude-busy:   {{provider: anthropic, model: claude-always-overloaded,
                  price: {{input_per_mtok: 3, output_per_mtok: 15}}, max_output_tokens: 8192}}
  llama-groq:    {{provider: groq, model: llama-3.3-70b-versatile,
                  price: {{input_per_mtok: 0.59, output_per_mtok: 0.79}}}}
  llama-local:   {{provider: ollama, model: llama3.2,
                  price: {{input_per_mtok: 0, output_per_mtok: 0}}}}

tiers:
  fast:     [gpt-4o-mini, llama-groq, llama-local]
  smart:    [claude-sonnet, gpt-4o-mini]
  fallback: [claude-busy, llama-groq]   # the first answers 529 Overloaded, always

keys:
  - name: demo
    key_sha256: {digest}
    daily_budget_usd: 1.00
  - name: demo-tiny
    key_sha256: {tiny_digest}
    daily_budget_usd: 0.000001

settings:
  data_dir: {tmp}/data
  usage_log: {tmp}/usage.jsonl
  retry: {{max_retries: 0}}
"""


def examples(port: int, tmp: Path) -> str:
    base = f"http://127.0.0.1:{port}"
    curl = (f"curl {base}/v1/chat/completions -H 'Authorization: Bearer {DEMO_KEY}' "
            "-H 'Content-Type: application/json' -d '{{\"model\": \"{model}\", \"messages\": "
            "[{{\"role\": \"user\", \"content\": \"Hello!\"}}]}}'")
    messages = (f"curl {base}/v1/messages -H 'x-api-key: {DEMO_KEY}' "
                "-H 'anthropic-version: 2023-06-01' -H 'Content-Type: application/json' "
                "-d '{\"model\": \"smart\", \"max_tokens\": 200, \"messages\": "
                "[{\"role\": \"user\", \"content\": \"Hello!\"}]}'")
    responses = (f"curl {base}/v1/responses -H 'Authorization: Bearer {DEMO_KEY}' "
                 "-H 'Content-Type: application/json' "
                 "-d '{\"model\": \"smart\", \"input\": \"Hello!\"}'")
    claude = (f"ANTHROPIC_BASE_URL={base} ANTHROPIC_AUTH_TOKEN={DEMO_KEY} "
              "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 ANTHROPIC_MODEL=smart "
              "ANTHROPIC_SMALL_FAST_MODEL=fast claude")
    claude_tool = (claude.replace("=smart", "=fast") + " -p 'mock:tool Bash "
                   "{\"command\": \"echo hi\"}' --allowedTools \"Bash(echo:*)\"")
    reroute = f"sed -i 's/^  fast: .*/  fast:     [llama-local, gpt-4o-mini]/' {tmp}/router.yaml"
    return f"""
The gateway is up at {base}/v1 with mock providers behind it (no network, no keys).
Paste any line below into another terminal.

A tier (fast: gpt-4o-mini -> llama-groq -> llama-local):
  {curl.format(model="fast")}

A fallback (claude-busy always answers 529; llama-groq serves; see x-gateway-attempts):
  {curl.format(model="fallback").replace("curl ", "curl -i ", 1)}

The cache (send the same request twice: the second says x-gateway-cache: hit, costs nothing
and calls no provider):
  {curl.format(model="fast").replace("curl ", "curl -si ", 1)} | grep -i x-gateway-cache

A budget refusal (the key {TINY_KEY} may spend $0.000001 a day: 429, budget_exceeded,
before any provider is called; a cache hit would have been served, as it costs nothing, and
so would the tier fast, whose free llama-local it can pay for):
  {curl.format(model="gpt-4o-mini").replace(DEMO_KEY, TINY_KEY).replace("Hello!", "Tell me more")}

What the demo key has spent today, and has left:
  curl {base}/v1/budget -H 'Authorization: Bearer {DEMO_KEY}'

Claude through the OpenAI API, streamed:
  {curl.format(model="smart").replace('"messages"', '"stream": true, "messages"')}

Anthropic's Messages API, as Claude Code and the Anthropic SDK speak it (smart starts with
Claude: the body goes to Anthropic as sent; fast starts with GPT: it is translated):
  {messages}

The Anthropic Python SDK (pip install anthropic), pasted into a shell:
  python3 - <<'EOF'
import anthropic
client = anthropic.Anthropic(base_url="{base}", api_key="{DEMO_KEY}")
with client.messages.stream(model="fast", max_tokens=200,
                            messages=[{{"role": "user", "content": "Hi"}}]) as stream:
    print(stream.get_final_message().content[0].text)
EOF

OpenAI's Responses API, as Codex and the SDKs' client.responses speak it (fast starts with
GPT: the body goes to OpenAI as sent; smart starts with Claude: it is translated):
  {responses}

Claude Code (npm install -g @anthropic-ai/claude-code) on smart, with its tools off (the
demo's mock calls every tool it is offered); then a tool round trip on fast, translated onto
GPT, where the prompt tells the mock which tool to call (Claude Code runs it and sends the
result back):
  {claude} -p "Say hello" --tools ""
  {claude_tool}

A reload: edit the demo's router.yaml so that fast starts with llama-local, and the running
gateway serves the next request from it, within about a second, without a restart (and
without the cached answer, which belongs to the old route):
  {reroute} && sleep 2 && {curl.format(model="fast")}

Every request above is one line of the usage log (no prompt, no key):
  tail -n 2 {tmp / "usage.jsonl"}

The OpenAI Python SDK (pip install openai), pasted into a shell:
  python3 - <<'EOF'
from openai import OpenAI
client = OpenAI(base_url="{base}/v1", api_key="{DEMO_KEY}")
reply = client.chat.completions.create(
    model="fast", messages=[{{"role": "user", "content": "Hi"}}])
print(reply.model, reply.choices[0].message.content)
EOF

Press Ctrl+C to stop.
"""


async def _serve(port: int, tmp: Path, store_url: str) -> None:
    mock = MockProvider()
    mock.always["claude-always-overloaded"] = Step(status=529, error_message="Overloaded")
    runner, mock_port = await mock.serve()
    path = tmp / "router.yaml"
    digest = hashlib.sha256(DEMO_KEY.encode()).hexdigest()
    tiny_digest = hashlib.sha256(TINY_KEY.encode()).hexdigest()
    path.write_text(ROUTER_YAML.format(mock=f"http://127.0.0.1:{mock_port}", digest=digest,
                                       tiny_digest=tiny_digest,
                                       tmp=tmp))
    app = create_app(load_config(path), store_url)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_config=log_config("WARNING"), access_log=False))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if server.started:  # the examples work from the moment they are printed
            print(examples(port, tmp), flush=True)
        await serving
    finally:
        await runner.cleanup()


def run_demo(port: int) -> int:
    with tempfile.TemporaryDirectory(prefix="gateway-demo-") as tmp, \
            embedded_store.running(Path(tmp) / "data") as store_url, \
            contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(port, Path(tmp), store_url))
    return 0
