"""Many concurrent requests on a healthy store: local connection limits are not an outage."""

from __future__ import annotations

import asyncio
from pathlib import Path

import openai

from gateway.demo.mockprovider import MockProvider, Step
from tests.conftest import RedisServer, gateway_running, sha

KEY = "sk-test-pool"


def test_three_hundred_concurrent_requests_on_a_healthy_redis_are_all_served(
        mock: MockProvider, redis_server: RedisServer, tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(
        f"providers:\n  openai: {{api_key: sk-o, api_base: '{mock.base_url}/v1'}}\n"  # type: ignore[attr-defined]
        "models:\n  gpt: {provider: openai, model: gpt-pool, "
        "price: {input_per_mtok: 1, output_per_mtok: 2}}\n"
        f"keys:\n  - {{name: pool, key_sha256: {sha(KEY)}, daily_budget_usd: 100}}\n"
        f"settings:\n  redis_url: '{redis_server.url}'\n  usage_log: ''\n"
        "  retry: {max_retries: 0}\n")
    mock.always["gpt-pool"] = Step(delay_s=0.3)

    async def burst(base_url: str) -> list[int]:
        async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=KEY,
                                      max_retries=0, timeout=60) as client:
            async def one(i: int) -> int:
                try:  # every request different: each one looks the cache up, and misses
                    await client.chat.completions.create(
                        model="gpt", messages=[{"role": "user", "content": f"pool {i}"}])
                except openai.APIStatusError as exc:
                    return exc.status_code
                return 200

            return await asyncio.gather(*(one(i) for i in range(300)))

    with gateway_running(config, tmp_path / "gateway.log") as base_url:
        statuses = asyncio.run(burst(base_url))
    log = (tmp_path / "gateway.log").read_text()
    assert statuses.count(200) == 300, {s: statuses.count(s) for s in set(statuses)}
    assert "does not answer" not in log
