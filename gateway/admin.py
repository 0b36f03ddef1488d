"""The operator's endpoints: spend, the effective configuration, reload, metrics.

Each needs the master key, or, with none configured, a caller on this machine.
"""

from __future__ import annotations

import os
from datetime import date

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway import auth, config_view, untrusted
from gateway import reload as reloading
from gateway.errors import InvalidRequest, NotReady
from gateway.money import budget
from gateway.money.cost import dollars
from gateway.records import metrics
from gateway.server import supervisor
from gateway.services import Services
from gateway.store import StoreDown

JSON = "application/json"


def client_host(request: Request) -> str | None:
    return request.client.host if request.client else None


async def spend(request: Request) -> Response:
    services: Services = request.app.state.services
    config = services.config
    auth.authenticate_operator(request.headers, config, client_host(request))
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


async def effective_config(request: Request) -> Response:
    services: Services = request.app.state.services
    reloader: reloading.Reloader = request.app.state.reloader
    config = services.config
    auth.authenticate_operator(request.headers, config, client_host(request))
    error, held = reloader.last_error, reloader.held
    body = {"path": str(config.path), "sha256": config.sha256, "loaded_at": reloader.loaded_at,
            "pid": os.getpid(),
            "last_reload_error": error and {"at": error.at, "problems": list(error.problems)},
            "held_reload": held and {"at": held.at, "sha256": held.sha256,
                                     "widens": list(held.widens)},
            "pending_restart": list(reloader.pending_restart),
            "config": config_view.effective(config)}
    return Response(orjson.dumps(body), media_type=JSON)


async def reload_config(request: Request) -> Response:
    services: Services = request.app.state.services
    auth.authenticate_operator(request.headers, services.config, client_host(request))
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
    auth.authenticate_operator(request.headers, services.config, client_host(request))
    text = services.records.metrics.render()
    return Response(text, headers={"content-type": metrics.CONTENT_TYPE})
