"""The HTTP surface, thin: read, authenticate, hand to the pipeline, write."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from gateway import auth, budget, config_view, pipeline, reload, routing, supervisor, validation
from gateway.errors import InvalidRequest, NotReady, PayloadTooLarge
from gateway.store import StoreDown

router = APIRouter()
JSON = "application/json"


def _too_large(max_body_mb: float) -> PayloadTooLarge:
    return PayloadTooLarge(f"the body is over settings.max_body_mb ({max_body_mb:g} MB); "
                           "send a smaller request")


async def read_body(request: Request, max_body_mb: float) -> bytes:
    limit = int(max_body_mb * 1024 * 1024)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(max_body_mb)  # refused before reading a byte of it
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise _too_large(max_body_mb)
        parts.append(part)
    return b"".join(parts)


Parse = Callable[[bytes], dict[str, Any]]
Handle = Callable[[pipeline.Services, pipeline.Call], Awaitable[pipeline.Outcome]]


async def _serve(request: Request, parse: Parse, handle: Handle) -> Response:
    services: pipeline.Services = request.app.state.services
    config = services.config  # one configuration for the whole request, even across a reload
    key = auth.authenticate(request.headers, config)
    body = parse(await read_body(request, config.settings.max_body_mb))
    trace = pipeline.new_trace(config, body["model"])
    request.state.trace = trace
    call = pipeline.Call(config, key, body, trace, request.state.request_id,
                         request.headers.get("cache-control"))
    outcome = await handle(services, call)
    if outcome.stream is not None:
        headers = {**outcome.headers, "cache-control": "no-cache", "x-accel-buffering": "no"}
        return StreamingResponse(outcome.stream, media_type="text/event-stream",
                                 headers=headers)
    return Response(outcome.body, media_type=JSON, headers=outcome.headers)


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    return await _serve(request, validation.parse_chat, pipeline.chat)


@router.post("/v1/embeddings")
async def embeddings(request: Request) -> Response:
    return await _serve(request, validation.parse_embeddings, pipeline.embeddings)


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    config = request.app.state.services.config
    key = auth.authenticate(request.headers, config)
    created = int(time.time())
    data = [{"id": name, "object": "model", "created": created, "owned_by": "gateway"}
            for name in routing.allowed_names(config, key)]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type=JSON)


def _usd(micro: int | None) -> float | None:
    return None if micro is None else round(micro / 1_000_000, 6)


@router.get("/v1/budget")
async def key_budget(request: Request) -> Response:
    services: pipeline.Services = request.app.state.services
    key = auth.authenticate(request.headers, services.config)
    day = budget.today()
    try:
        balance = await services.budgets.balance(key, day)
    except StoreDown as exc:
        raise NotReady(f"{exc}: the budget cannot be read now") from None
    body = {"key": key.name, "budget_usd": _usd(budget.budget_microusd(key)),
            "spent_usd": _usd(balance.spent), "reserved_usd": _usd(balance.reserved),
            "remaining_usd": _usd(balance.remaining(key)), "resets_at": budget.resets_at(day)}
    return Response(orjson.dumps(body), media_type=JSON)


@router.get("/admin/spend")
async def admin_spend(request: Request) -> Response:
    services: pipeline.Services = request.app.state.services
    config = services.config
    auth.authenticate_admin(request.headers, config)
    given = request.query_params.get("date")
    try:
        day = date.fromisoformat(given) if given else budget.today()
    except ValueError:
        raise InvalidRequest(f"date must be YYYY-MM-DD; got {given!r}", param="date") from None
    try:
        spent = await services.budgets.spend_on(day)
    except StoreDown as exc:
        raise NotReady(f"{exc}: spend cannot be read now") from None
    budgets = {key.name: budget.budget_microusd(key) for key in config.keys}
    names = [*budgets, *sorted(set(spent) - set(budgets))]  # a removed key's spend too
    rows = [{"key": name, "spent_usd": _usd(spent.get(name, 0)),
             "budget_usd": _usd(budgets.get(name))} for name in names]
    body = {"date": day.isoformat(), "keys": rows, "total_usd": _usd(sum(spent.values()))}
    return Response(orjson.dumps(body), media_type=JSON)


@router.get("/admin/config")
async def admin_config(request: Request) -> Response:
    services: pipeline.Services = request.app.state.services
    reloader: reload.Reloader = request.app.state.reloader
    config = services.config
    auth.authenticate_admin(request.headers, config)
    error = reloader.last_error
    body = {"path": str(config.path), "sha256": config.sha256, "loaded_at": reloader.loaded_at,
            "pid": os.getpid(),
            "last_reload_error": error and {"at": error.at, "problems": list(error.problems)},
            "pending_restart": list(reloader.pending_restart),
            "config": config_view.effective(config)}
    return Response(orjson.dumps(body), media_type=JSON)


@router.post("/admin/reload")
async def admin_reload(request: Request) -> Response:
    services: pipeline.Services = request.app.state.services
    auth.authenticate_admin(request.headers, services.config)
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


@router.get("/health")
async def health() -> Response:
    return Response(b'{"status":"ok"}', media_type=JSON)


@router.get("/ready")
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
