"""The routes, thin: read, authenticate, parse with the route's surface, answer, render."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import admin, auth, conversations, pipeline, routing, untrusted
from gateway.answer import Events
from gateway.config import ApiKey
from gateway.context import Context, status_of
from gateway.errors import (
    ClientGone,
    GatewayError,
    NotReady,
    PayloadTooLarge,
    RequestTimeout,
    ResponseNotFound,
    UpgradeRequired,
)
from gateway.money import budget
from gateway.money.cost import dollars
from gateway.records import records
from gateway.request import GatewayRequest
from gateway.server.event_stream import EventStream
from gateway.server.overload import client_gone
from gateway.services import Services
from gateway.store import StoreDown
from gateway.surfaces import anthropic_messages, openai_chat, openai_embeddings, openai_responses
from gateway.surfaces.base import Surface

JSON = "application/json"
# When a name "was released", which both model lists require: the epoch, as names of the
# gateway's configuration have no such date.
CREATED_AT = "1970-01-01T00:00:00Z"


def _too_large(max_body_mb: float) -> PayloadTooLarge:
    return PayloadTooLarge(f"the body is over settings.max_body_mb ({max_body_mb:g} MB); "
                           "send a smaller request")


def _left_while_sending() -> ClientGone:  # its leaving, not our error
    return ClientGone("the client left before its body arrived")


async def read_body(request: Request, max_body_mb: float, timeout_s: float) -> bytes:
    limit = int(max_body_mb * 1024 * 1024)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(max_body_mb)  # refused before reading a byte of it
    if getattr(getattr(request.receive, "__self__", None), "more_body", True) is False:
        # uvicorn has the whole body already (its cycle says so): one receive, no wait to
        # bound, as for nearly every API request.
        message = await request.receive()
        if message["type"] != "http.request":
            raise _left_while_sending()
        body: bytes = message.get("body", b"")
        if len(body) > limit:
            raise _too_large(max_body_mb)
        return body
    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):  # a client that never finishes holds nothing
            async for part in request.stream():
                size += len(part)
                if size > limit:
                    raise _too_large(max_body_mb)
                parts.append(part)
    except ClientDisconnect:  # it hung up while sending: its leaving, not our error
        raise _left_while_sending() from None
    except TimeoutError:
        raise RequestTimeout(f"the body did not arrive within settings.timeouts.read_body_s "
                             f"({timeout_s:g} s); send it whole, or faster") from None
    return b"".join(parts)


async def _asked(request: Request, ctx: Context,
                 parse: Callable[[bytes, Mapping[str, str]], GatewayRequest]) -> None:
    """Authenticate, read and parse: from here the request has a key, a body and a trace."""
    ctx.key = auth.authenticate(request.headers, ctx.config)
    ctx.record.key = ctx.key.name
    settings = ctx.config.settings
    raw = await read_body(request, settings.max_body_mb, settings.timeouts.read_body_s)
    ctx.asks(parse(raw, request.headers))
    request.state.trace = ctx.trace


def _ended(ctx: Context, exc: BaseException) -> None:
    """The request failed or was refused: recorded with its status and code, closed."""
    if isinstance(exc, GatewayError):
        ctx.record.error_code = exc.code
    ctx.close(status_of(exc))


async def _serve(request: Request, surface: Surface, stored: bool = False) -> Response:
    """Read, authenticate, parse, answer; the request's context is closed however it ends.
    `stored`: the surface's answers are kept for the next turn (conversations.py)."""
    request.state.surface = surface  # refusals from here on are rendered in its dialect
    services: Services = request.app.state.services
    # One configuration for the whole request, even across a reload.
    ctx = Context(services, records.Record(request.state.request_id, services.config,
                                           surface=surface.name),
                  lambda: client_gone(request.receive), request.headers.get("cache-control"))
    try:
        await _asked(request, ctx, surface.parse)
        if stored:  # the conversation so far, from the store, before anything is priced
            assert ctx.request is not None
            limit = int(ctx.config.settings.max_body_mb * 1024 * 1024)
            ctx.request = await conversations.continued(services.store, ctx.key, ctx.request,
                                                        limit)
        outcome = await pipeline.serve(ctx)
        assert ctx.request is not None
        if stored:
            outcome = await conversations.kept(services.store, ctx.config.settings.responses.ttl_s,
                                               ctx.key, ctx.request, outcome)
    except BaseException as exc:
        _ended(ctx, exc)
        raise
    if isinstance(outcome, Events):  # it closes the context at its end
        headers = {**outcome.headers, "cache-control": "no-cache", "x-accel-buffering": "no"}
        assert ctx.trace is not None
        return EventStream(surface.events(ctx.request, outcome), headers,
                           ctx.trace.deadline)
    ctx.close(200)
    return Response(surface.answer(ctx.request, outcome), media_type=JSON,
                    headers=outcome.headers)


async def chat_completions(request: Request) -> Response:
    return await _serve(request, openai_chat.SURFACE)


async def embeddings(request: Request) -> Response:
    return await _serve(request, openai_embeddings.SURFACE)


async def messages(request: Request) -> Response:
    return await _serve(request, anthropic_messages.SURFACE)


async def responses(request: Request) -> Response:
    return await _serve(request, openai_responses.SURFACE, stored=True)


async def _stored(request: Request) -> tuple[Services, ApiKey, str]:
    request.state.surface = openai_responses.SURFACE
    services: Services = request.app.state.services
    return (services, auth.authenticate(request.headers, services.config),
            request.path_params["response_id"])


def _not_found(response_id: str) -> ResponseNotFound:
    return ResponseNotFound(f"Response with id '{untrusted.bounded(response_id)}' not found "
                            "(it was not stored "
                            "for this key, was deleted, or has expired)")


async def retrieve_response(request: Request) -> Response:
    """GET /v1/responses/{id}: a response this key stored."""
    services, key, response_id = await _stored(request)
    if (found := await conversations.fetch(services.store, key, response_id)) is None:
        raise _not_found(response_id)
    return Response(orjson.dumps(found["response"]), media_type=JSON)


async def delete_response(request: Request) -> Response:
    services, key, response_id = await _stored(request)
    if not await conversations.delete(services.store, key, response_id):
        raise _not_found(response_id)
    body = {"id": response_id, "object": "response", "deleted": True}
    return Response(orjson.dumps(body), media_type=JSON)


async def input_items(request: Request) -> Response:
    """GET /v1/responses/{id}/input_items: the items the response answered, the conversation
    it continued included, a page at a time (OpenAI's `limit`, `order`, `after`)."""
    services, key, response_id = await _stored(request)
    if (found := await conversations.fetch(services.store, key, response_id)) is None:
        raise _not_found(response_id)
    page = conversations.page(found["input"], request.query_params)
    return Response(orjson.dumps(page), media_type=JSON)


async def responses_socket(request: Request) -> Response:
    """GET /v1/responses: Codex's WebSocket mode asks here (only with supports_websockets set
    for its provider); 426 makes it carry on over HTTP at once."""
    raise UpgradeRequired("the gateway serves the Responses API over HTTP only: POST "
                          "/v1/responses (streamed with stream: true)")


async def _count(request: Request, surface: Surface, name: str,
                 parse: Callable[[bytes, Mapping[str, str]], GatewayRequest],
                 shown: Callable[[int], dict[str, object]]) -> Response:
    """A count of a body's input tokens, as the first model of the chain counts it."""
    request.state.surface = surface
    services: Services = request.app.state.services
    ctx = Context(services, records.Record(request.state.request_id, services.config,
                                           surface=name))
    try:
        await _asked(request, ctx, parse)
        if surface is openai_responses.SURFACE:  # the conversation it continues counts too
            assert ctx.request is not None
            limit = int(ctx.config.settings.max_body_mb * 1024 * 1024)
            ctx.request = await conversations.continued(services.store, ctx.key, ctx.request,
                                                        limit)
        counted = await pipeline.count_tokens(ctx)
    except BaseException as exc:
        _ended(ctx, exc)
        raise
    ctx.close(200)
    return Response(orjson.dumps(shown(counted)), media_type=JSON)


async def count_tokens(request: Request) -> Response:
    """POST /v1/messages/count_tokens."""
    return await _count(request, anthropic_messages.SURFACE, "messages.count_tokens",
                        anthropic_messages.count_body, lambda n: {"input_tokens": n})


async def input_tokens(request: Request) -> Response:
    """POST /v1/responses/input_tokens (the SDKs' responses.input_tokens.count)."""
    return await _count(request, openai_responses.SURFACE, "responses.input_tokens",
                        openai_responses.parse,
                        lambda n: {"object": "response.input_tokens", "input_tokens": n})


def _model(name: str) -> dict[str, object]:
    """One name, in the fields both SDKs read: OpenAI's Model and Anthropic's ModelInfo."""
    return {"id": name, "object": "model", "created": 0, "owned_by": "gateway",
            "type": "model", "display_name": name, "created_at": CREATED_AT}


async def list_models(request: Request) -> Response:
    """GET /v1/models, a page both the OpenAI and the Anthropic SDK list (one page: all)."""
    config = request.app.state.services.config
    key = auth.authenticate(request.headers, config)
    data = [_model(name) for name in routing.allowed_names(config, key)]
    body = {"object": "list", "data": data, "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None}
    return Response(orjson.dumps(body), media_type=JSON)


async def retrieve_model(request: Request) -> Response:
    """GET /v1/models/{model} (the SDKs' models.retrieve): refused as a chat request for
    that name would be, so that a client can check a name before it asks."""
    config = request.app.state.services.config
    key = auth.authenticate(request.headers, config)
    name = request.path_params["model"]
    routing.plan(config, key, name)
    return Response(orjson.dumps(_model(name)), media_type=JSON)


async def key_budget(request: Request) -> Response:
    services: Services = request.app.state.services
    key = auth.authenticate(request.headers, services.config)
    day = budget.today()
    try:
        balance = await services.budgets.balance(key, day)
    except StoreDown as exc:
        raise NotReady(f"{exc}: the budget cannot be read now") from None
    body = {"key": key.name, "budget_usd": dollars(budget.budget_microusd(key)),
            "spent_usd": dollars(balance.spent), "reserved_usd": dollars(balance.reserved),
            "remaining_usd": dollars(balance.remaining(key)),
            "resets_at": budget.resets_at(day)}
    return Response(orjson.dumps(body), media_type=JSON)


async def health(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type=JSON)


async def ready(request: Request) -> Response:
    services = getattr(request.app.state, "services", None)
    if services is None:
        return _not_ready("no configuration is loaded")
    if problem := await services.store.problem():
        return _not_ready(problem)
    config = services.config
    usable = sum(1 for m in config.models.values() if not m.unusable)
    body = {"status": "ready", "models": len(config.models), "usable_models": usable,
            "store": services.store.kind}
    return Response(orjson.dumps(body), media_type=JSON)


def _not_ready(reason: str) -> Response:
    body = {"status": "not ready", "reason": reason}
    return Response(orjson.dumps(body), status_code=503, media_type=JSON)


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    Route("/v1/messages", messages, methods=["POST"]),
    Route("/v1/responses", responses, methods=["POST"]),
    Route("/v1/responses", responses_socket, methods=["GET"]),
    Route("/v1/responses/input_tokens", input_tokens, methods=["POST"]),
    Route("/v1/responses/{response_id}", retrieve_response, methods=["GET"]),
    Route("/v1/responses/{response_id}", delete_response, methods=["DELETE"]),
    Route("/v1/responses/{response_id}/input_items", input_items, methods=["GET"]),
    Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
    Route("/v1/budget", key_budget, methods=["GET"]),
    Route("/admin/spend", admin.spend, methods=["GET"]),
    Route("/admin/config", admin.effective_config, methods=["GET"]),
    Route("/admin/reload", admin.reload_config, methods=["POST"]),
    Route("/metrics", admin.prometheus_metrics, methods=["GET"]),
    Route("/health", health, methods=["GET"]),
    Route("/ready", ready, methods=["GET"]),
]
