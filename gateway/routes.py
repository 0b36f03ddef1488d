"""The HTTP surface, thin: read, authenticate, hand to the pipeline, write."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway import auth, config_view, pipeline, reload, routing, streaming, untrusted, validation
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    NotReady,
    PayloadTooLarge,
    RequestTimeout,
)
from gateway.money import budget
from gateway.money.cost import dollars
from gateway.records import metrics, records
from gateway.server import supervisor
from gateway.server.overload import client_gone
from gateway.services import Services
from gateway.store import StoreDown

JSON = "application/json"


def _too_large(max_body_mb: float) -> PayloadTooLarge:
    return PayloadTooLarge(f"the body is over settings.max_body_mb ({max_body_mb:g} MB); "
                           "send a smaller request")


async def read_body(request: Request, max_body_mb: float, timeout_s: float) -> bytes:
    limit = int(max_body_mb * 1024 * 1024)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(max_body_mb)  # refused before reading a byte of it
    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):  # a client that never finishes holds nothing
            async for part in request.stream():
                size += len(part)
                if size > limit:
                    raise _too_large(max_body_mb)
                parts.append(part)
    except TimeoutError:
        raise RequestTimeout(f"the body did not arrive within settings.timeouts.read_body_s "
                             f"({timeout_s:g} s); send it whole, or faster") from None
    return b"".join(parts)


def _client_host(request: Request) -> str | None:
    return request.client.host if request.client else None


Parse = Callable[[bytes], dict[str, Any]]
Handle = Callable[[Services, pipeline.Call], Awaitable[pipeline.Outcome]]


async def _serve(request: Request, parse: Parse, handle: Handle) -> Response:
    services: Services = request.app.state.services
    config = services.config  # one configuration for the whole request, even across a reload
    record = records.Record(request.state.request_id, config)
    try:
        outcome = await _answer(request, services, record, parse, handle)
    except BaseException as exc:  # recorded, then handled where it always was
        if isinstance(exc, GatewayError):
            record.error_code = exc.code
        services.records.close(record, _status_of(exc))
        raise
    if outcome.stream is not None:
        if not outcome.closes_record:
            services.records.close(record, 200)
        headers = {**outcome.headers, "cache-control": "no-cache", "x-accel-buffering": "no"}
        return StreamingResponse(outcome.stream, media_type="text/event-stream",
                                 headers=headers)
    services.records.close(record, 200)
    return Response(outcome.body, media_type=JSON, headers=outcome.headers)


async def _answer(request: Request, services: Services, record: records.Record,
                  parse: Parse, handle: Handle) -> pipeline.Outcome:
    config = record.config
    key = auth.authenticate(request.headers, config)
    record.key = key.name
    settings = config.settings
    body = parse(await read_body(request, settings.max_body_mb, settings.timeouts.read_body_s))
    record.requested, record.stream = body["model"], bool(body.get("stream"))
    if settings.log_content:
        record.prompt = body.get("messages", body.get("input"))
    trace = pipeline.new_trace(config, body["model"], record.request_id)
    request.state.trace = record.trace = trace
    call = pipeline.Call(config, key, body, trace, record, lambda: client_gone(request.receive),
                         request.headers.get("cache-control"))
    return await handle(services, call)


def _status_of(exc: BaseException) -> int:
    if isinstance(exc, GatewayError):
        return exc.status
    return streaming.CLIENT_LEFT if isinstance(exc, asyncio.CancelledError) else 500


async def chat_completions(request: Request) -> Response:
    return await _serve(request, validation.parse_chat, pipeline.chat)


async def embeddings(request: Request) -> Response:
    return await _serve(request, validation.parse_embeddings, pipeline.embeddings)


async def list_models(request: Request) -> Response:
    config = request.app.state.services.config
    key = auth.authenticate(request.headers, config)
    created = int(time.time())
    data = [{"id": name, "object": "model", "created": created, "owned_by": "gateway"}
            for name in routing.allowed_names(config, key)]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type=JSON)


async def retrieve_model(request: Request) -> Response:
    """GET /v1/models/{model} (the SDK's models.retrieve): refused as a chat request for
    that name would be, so that a client can check a name before it asks."""
    config = request.app.state.services.config
    key = auth.authenticate(request.headers, config)
    name = request.path_params["model"]
    routing.plan(config, key, name)
    body = {"id": name, "object": "model", "created": int(time.time()), "owned_by": "gateway"}
    return Response(orjson.dumps(body), media_type=JSON)


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


async def admin_spend(request: Request) -> Response:
    services: Services = request.app.state.services
    config = services.config
    auth.authenticate_operator(request.headers, config, _client_host(request))
    given = request.query_params.get("date")
    try:
        day = date.fromisoformat(given) if given else budget.today()
    except ValueError:
        raise InvalidRequest(f"date must be YYYY-MM-DD; got {untrusted.bounded(repr(given))}",
                             param="date") from None
    try:
        spent = await services.budgets.spend_on(day)
    except StoreDown as exc:
        raise NotReady(f"{exc}: spend cannot be read now") from None
    rows = [{"key": row.key, "spent_usd": dollars(row.spent),
             "budget_usd": dollars(row.budget)} for row in budget.spend_rows(config.keys, spent)]
    body = {"date": day.isoformat(), "keys": rows, "total_usd": dollars(sum(spent.values()))}
    return Response(orjson.dumps(body), media_type=JSON)


async def admin_config(request: Request) -> Response:
    services: Services = request.app.state.services
    reloader: reload.Reloader = request.app.state.reloader
    config = services.config
    auth.authenticate_operator(request.headers, config, _client_host(request))
    error, held = reloader.last_error, reloader.held
    body = {"path": str(config.path), "sha256": config.sha256, "loaded_at": reloader.loaded_at,
            "pid": os.getpid(),
            "last_reload_error": error and {"at": error.at, "problems": list(error.problems)},
            "held_reload": held and {"at": held.at, "sha256": held.sha256,
                                     "widens": list(held.widens)},
            "pending_restart": list(reloader.pending_restart),
            "config": config_view.effective(config)}
    return Response(orjson.dumps(body), media_type=JSON)


async def admin_reload(request: Request) -> Response:
    services: Services = request.app.state.services
    auth.authenticate_operator(request.headers, services.config, _client_host(request))
    reloaded = await request.app.state.reloader.reload("POST /admin/reload")
    # The other workers read the same file and reach the same end, an error included.
    others = supervisor.reload_other_workers()
    if reloaded.status == "rejected":
        problems = "; ".join(reloaded.problems)
        raise InvalidRequest(f"{services.config.path.name} has {len(reloaded.problems)} "
                             f"problem(s) and was not loaded; the previous configuration keeps "
                             f"serving. Fix: {problems}", code="invalid_config")
    body = {"status": reloaded.status, "changes": list(reloaded.changes),
            "sha256": services.config.sha256, "other_workers_signalled": others}
    return Response(orjson.dumps(body), media_type=JSON)


async def prometheus_metrics(request: Request) -> Response:
    services: Services = request.app.state.services
    # Every key's spend is not for every caller's eyes.
    auth.authenticate_operator(request.headers, services.config, _client_host(request))
    text = services.records.metrics.render()
    return Response(text, headers={"content-type": metrics.CONTENT_TYPE})


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
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
    Route("/v1/budget", key_budget, methods=["GET"]),
    Route("/admin/spend", admin_spend, methods=["GET"]),
    Route("/admin/config", admin_config, methods=["GET"]),
    Route("/admin/reload", admin_reload, methods=["POST"]),
    Route("/metrics", prometheus_metrics, methods=["GET"]),
    Route("/health", health, methods=["GET"]),
    Route("/ready", ready, methods=["GET"]),
]
