"""The floor: a bare forwarder on the gateway's own stack (Starlette on uvicorn, one aiohttp
session), for bench/run.py.

    python bench/bare.py --port 8100 --upstream http://127.0.0.1:9100

Every POST goes to the same path upstream with its body and authorization, and the answer
comes back as it came: a plain one read whole, a stream relayed as its bytes arrive. No
keys, budgets, routing, parsing or records: what any Python proxy on this stack must pay,
so the gateway's own cost is what it adds to this.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

FORWARDED = ("authorization", "content-type", "x-api-key", "anthropic-version")


def app_for(upstream: str) -> Starlette:
    session: aiohttp.ClientSession | None = None

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        nonlocal session
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        yield
        await session.close()

    async def forward(request: Request) -> Response:
        assert session is not None
        headers = {k: v for k, v in request.headers.items() if k in FORWARDED}
        upstream_response = await session.post(upstream + request.url.path,
                                               data=await request.body(), headers=headers)
        kind = upstream_response.headers.get("content-type", "application/json")
        if not kind.startswith("text/event-stream"):
            body = await upstream_response.read()
            upstream_response.release()
            return Response(body, upstream_response.status, media_type=kind)

        async def relayed() -> AsyncIterator[bytes]:
            try:
                async for data in upstream_response.content.iter_any():
                    yield data
            finally:
                upstream_response.release()

        return StreamingResponse(relayed(), upstream_response.status, media_type=kind)

    return Starlette(routes=[Route("/{path:path}", forward, methods=["POST"]),
                             Route("/health", lambda _: Response("ok"))], lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the mock's base URL")
    args = parser.parse_args()
    uvicorn.run(app_for(args.upstream), host="127.0.0.1", port=args.port, log_level="warning",
                access_log=False)


if __name__ == "__main__":
    main()
