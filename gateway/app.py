"""create_app(): the ASGI application, its lifespan and its error handlers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import random
import signal
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

from starlette.datastructures import State
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router
from starlette.types import Lifespan, Message, Receive, Scope, Send

from gateway import book, reload, untrusted
from gateway.alerts import Alerts
from gateway.balance import Balancer
from gateway.config import CONFIG_ENV, Config, ConfigError, load_config
from gateway.cooldown import Cooldowns
from gateway.embedded_store import EMBEDDED_STORE_ENV
from gateway.errors import GatewayError, HeadersTooLarge, MethodNotAllowed, NotFound
from gateway.fleet import Fleet
from gateway.money import budget
from gateway.money.budget import Budgets
from gateway.money.ledger import Ledger
from gateway.money.quotas import Quotas
from gateway.providers.adapters import Adapters
from gateway.records.metrics import Metrics
from gateway.records.records import Records, open_usage_log
from gateway.request import Trace
from gateway.routes import routes
from gateway.server.http_protocol import TIMEOUTS_STATE
from gateway.server.overload import Overload
from gateway.services import Services
from gateway.store import Store
from gateway.surfaces import anthropic_messages, openai_chat
from gateway.surfaces.base import Surface

log = logging.getLogger("gateway")
# uvicorn's parser sets no limit; 32 KB is what nginx and Node accept by default.
MAX_HEADER_BYTES = 32 * 1024


class Gateway:
    """The ASGI application: Starlette's router inside one layer of ours.

    That layer gives every request its id (the `x-request-id` header), refuses
    oversized headers, and turns every error into an answer in the caller's dialect: ours
    (GatewayError), the router's 404 and 405, and, as the outermost handler, any
    other exception, logged without its text. One layer instead of Starlette's
    three keeps the hot path short. Errors are rendered by the surface the route chose
    (surfaces/), OpenAI's when no route did.
    """

    def __init__(self, lifespan: Lifespan[Any]):
        self.state = State()  # `services` and `reloader`, set by the lifespan
        self.router = Router(routes, lifespan=lifespan)
        # The routes without parameters, found by a dict lookup: Starlette's router tries
        # each route's pattern and wraps the endpoint in two layers more (its exception
        # handling, which the gateway does here), 5% of a plain request's CPU.
        self.exact: dict[tuple[str, str], Callable[[Request], Awaitable[Response]]] = {
            (method, route.path): route.endpoint for route in routes
            if isinstance(route, Route) and "{" not in route.path
            for method in route.methods or ()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self  # the routes' request.app; the router raises HTTPException
        if scope["type"] != "http":
            await self.router(scope, receive, send)
            return
        # Unique, not secret: the fast generator (reseeded in every forked worker) will do.
        request_id = f"{random.getrandbits(128):032x}"
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        if _speaks_anthropic(scope):  # a refusal before the route is in Anthropic's shape too
            state["surface"] = anthropic_messages.SURFACE
        header = (b"x-request-id", request_id.encode())
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        # The API is shed under overload; health, readiness and metrics never are (no services).
        services: Services | None = getattr(self.state, "services", None)
        if not scope["path"].startswith("/v1/"):
            services = None
        try:
            if sum(len(name) + len(value) for name, value in scope["headers"]) > MAX_HEADER_BYTES:
                raise HeadersTooLarge(f"the request's headers are over "
                                      f"{MAX_HEADER_BYTES // 1024} KB; send fewer or shorter "
                                      "headers")
            if services is None:
                await self._route(scope, receive, send_with_id)
            elif not services.overload.left(receive):  # else it gave up while it waited
                with services.overload.admitted(services.config.settings.overload):
                    await self._route(scope, receive, send_with_id)
        except (GatewayError, HTTPException) as exc:
            if started:
                raise
            error = exc if isinstance(exc, GatewayError) else _http_error(scope, exc)
            await _response(error, state)(scope, receive, send_with_id)
        except Exception as exc:  # the outermost handler: nothing below may take the process
            _log_unexpected(request_id, exc)
            if not started:
                error = GatewayError(f"internal gateway error; quote request id {request_id} "
                                     "to your operator")
                await _response(error, state)(scope, receive, send_with_id)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Starlette's router, or, for a route without parameters, its endpoint at once."""
        endpoint = None if scope.get("root_path") else self.exact.get(
            (scope["method"], scope["path"]))
        if endpoint is None:
            await self.router(scope, receive, send)
            return
        scope["router"] = self.router
        response = await endpoint(Request(scope, receive, send))
        await response(scope, receive, send)


def _speaks_anthropic(scope: Scope) -> bool:
    """A caller of Anthropic's API: on its paths, or on /v1/models as the Anthropic SDK asks."""
    path: str = scope["path"]
    if path.startswith("/v1/messages"):
        return True
    return path.startswith("/v1/models") and any(
        name == b"anthropic-version" for name, _ in scope["headers"])


def _http_error(scope: Scope, exc: HTTPException) -> GatewayError:
    method, path = untrusted.bounded(scope["method"]), untrusted.bounded(scope["path"])
    if exc.status_code == 405:
        return MethodNotAllowed(f"{method} is not allowed on {path}")
    return NotFound(f"no such endpoint: {method} {path}; the gateway serves "
                    "/v1/chat/completions, /v1/embeddings, /v1/messages, "
                    "/v1/messages/count_tokens, /v1/responses (and /v1/responses/{id}, "
                    "/v1/responses/{id}/input_items, /v1/responses/input_tokens) and "
                    "/v1/models", code="not_found")


def _response(error: GatewayError, state: dict[str, Any]) -> Response:
    """The error in the dialect of the caller's surface (OpenAI's before a route chose one)."""
    surface: Surface = state.get("surface", openai_chat.SURFACE)
    trace: Trace | None = state.get("trace")
    headers = error.headers()
    if trace is not None:
        headers["x-gateway-attempts"] = str(len(trace.attempts))
    return Response(surface.error(error), status_code=error.status,
                    media_type="application/json", headers=headers)


def _log_unexpected(request_id: str, exc: Exception) -> None:
    # Where it broke, never what it held: exception text may carry prompts or keys.
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" at {os.path.basename(frame.filename)}:{frame.lineno}" if frame else ""
    log.error("request %s: internal error %s%s", request_id, type(exc).__name__, where)


def create_app(config: Config, store_url: str | None = None) -> Gateway:
    """`store_url` is the embedded store's, used when settings.redis_url is empty."""
    url = config.settings.redis_url or store_url
    if not url:
        raise ValueError("no store: set settings.redis_url, or start the embedded store "
                         "(embedded_store.running) and pass its URL")

    @asynccontextmanager
    async def lifespan(app: Gateway) -> AsyncIterator[Mapping[str, object]]:
        await asyncio.to_thread(reload.prepare, config)
        metrics = Metrics()
        store = Store(url, on_error=metrics.store_errors.inc)
        ledger = Ledger(store, book.SCRIPT)  # every quota's entries: one command per turn
        budgets = Budgets(ledger, hold_s=budget.hold_s_for(config.settings.timeouts))
        overload = Overload(lambda reason: metrics.shed.labels(reason).inc())
        cooldowns = Cooldowns()
        balancer = Balancer()
        fleet = Fleet(ledger, cooldowns, lambda: list(services.config.models),
                      busy=lambda: dict(balancer.busy), others=balancer.others)
        services = Services(config=config, adapters=Adapters(config), cooldowns=cooldowns,
                            store=store, budgets=budgets, quotas=Quotas(ledger), fleet=fleet,
                            records=Records(metrics, open_usage_log(config)), overload=overload,
                            balancer=balancer)
        alerts = Alerts(store, metrics, lambda: services.config.settings.alerts, services.spawn)
        background = [asyncio.create_task(fleet.run()), asyncio.create_task(alerts.run())]
        overload.start()
        reloader = reload.Reloader(services)
        app.state.services = services
        app.state.reloader = reloader
        for warning in config.warnings:
            log.warning("%s", warning)
        await store.problem()  # an unreachable store is logged now, not at the first request
        log.info("gateway ready: %d tiers, %d models, %d keys; store: %s", len(config.tiers),
                 len(config.models), len(config.keys), store.name)
        _settle_garbage_collector()
        watching = asyncio.create_task(reloader.watch())
        on_hup = _reload_on_sighup(services, reloader)
        try:  # the state is uvicorn's to read: each new connection's timeouts (http_protocol)
            yield {TIMEOUTS_STATE: lambda: services.config.settings.timeouts}
        finally:
            watching.cancel()
            for task in background:
                task.cancel()
            await overload.stop()
            if on_hup:  # a SIGHUP while stopping must not cut the settlements written below
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
            if services.tasks:  # settlements of streams that just ended
                await asyncio.wait(services.tasks, timeout=5)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(budgets.flush(), timeout=5)
            budgets.close()
            await asyncio.to_thread(services.records.shutdown)
            await services.adapters.close()
            await store.close()

    return Gateway(lifespan)


# Python's cyclic collector ran 700 allocations apart and, in its full passes, walked every
# object made at start-up (the provider price map of litellm among them): 9% of a busy
# worker's CPU in a profile (perf). What start-up made is kept out of its passes (freeze),
# and it runs once per GC_EVERY allocations: at concurrency 32, 495 -> 416 us of CPU a
# request. A request's objects are freed by their reference counts as before; only cycles
# wait for the collector, at most GC_EVERY containers' worth longer.
GC_EVERY = 5000


def _settle_garbage_collector() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_EVERY, 10, 10)


def _reload_on_sighup(services: Services, reloader: reload.Reloader) -> bool:
    def on_hup() -> None:
        services.spawn(reloader.reload_in_background("SIGHUP"))

    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, on_hup)
    except (ValueError, RuntimeError):  # not the main thread: an embedding application's call
        return False
    if _EarlySighup.seen:  # one came after router.yaml was read: the edit it signals is due
        _EarlySighup.seen = False
        on_hup()
    return True


class _EarlySighup:
    """SIGHUPs between the factory's reading of router.yaml and the lifespan's handler.

    Ignoring them (as before) would lose an edit signalled right after a start; the
    default action would exit. So they are noted, and the lifespan reloads once.
    """

    seen = False

    @classmethod
    def note(cls, signum: int, frame: FrameType | None) -> None:
        cls.seen = True


def create_app_from_env() -> Gateway:
    """The uvicorn factory: every worker process loads the file named by $GATEWAY_CONFIG."""
    # A SIGHUP before the lifespan installs its handler must neither kill the process nor be
    # lost. `gateway serve` has kept it blocked since its first line; one that waited is
    # delivered here, before the file is read, and costs one reload that finds it unchanged.
    signal.signal(signal.SIGHUP, _EarlySighup.note)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
    path = os.environ.get(CONFIG_ENV, "router.yaml")
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(1) from None
    return create_app(config, os.environ.get(EMBEDDED_STORE_ENV))
