"""`gateway serve | check | keys new | demo`."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import secrets
import sys
from datetime import date
from pathlib import Path

from gateway import embedded_store
from gateway.config import CONFIG_ENV, Config, ConfigError, Step, load_config
from gateway.embedded_store import EMBEDDED_STORE_ENV, EmbeddedStoreError
from gateway.server.logs import log_config

DEFAULT_PORT = 4000


def _config_path(given: str | None) -> Path:
    return Path(given or os.environ.get(CONFIG_ENV) or "router.yaml")


def _load_or_exit(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{path}: {len(exc.problems)} problem(s); nothing was started", file=sys.stderr)
        raise SystemExit(1) from None


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.server import supervisor
    from gateway.server.http_protocol import HeadTimedHttp

    path = _config_path(args.config).resolve()
    config = _load_or_exit(path)  # exit 1 before serving anything
    os.environ[CONFIG_ENV] = str(path)
    with contextlib.ExitStack() as stack:
        if not config.settings.redis_url:
            data_dir = config.resolve_path(config.settings.data_dir)
            try:
                os.environ[EMBEDDED_STORE_ENV] = stack.enter_context(
                    embedded_store.running(data_dir))
            except EmbeddedStoreError as exc:
                print(f"{path}: {exc}", file=sys.stderr)
                return 1
        return supervisor.serve("gateway.app:create_app_from_env", factory=True,
                                host=args.host, port=args.port, workers=args.workers,
                                loop="gateway.server.accept_loop:new_loop",  # accepts every waiting
                                http=HeadTimedHttp, access_log=False,
                                # No WebSocket: an upgrade is answered as HTTP (Codex's asks
                                # for /v1/responses get a 426, and it carries on over HTTP).
                                ws="none",
                                proxy_headers=False,  # the peer's own address: auth.is_local
                                log_config=log_config(), timeout_graceful_shutdown=30)


def cmd_check(args: argparse.Namespace) -> int:
    path = _config_path(args.config)
    config = _load_or_exit(path)
    print(f"{path}: valid")
    print("tiers:")
    for tier, names in config.tiers.items():
        chain = config.chain(tier) or ()
        usable = [m for m in chain if not m.unusable]
        note = "" if usable else "   <- no usable model: this tier fails every request"
        shown = [_shown_step(config, step) for step in config.groups.get(tier, names)]
        print(f"  {tier}: {' -> '.join(shown)}{note}")
    unusable = [m for m in config.models.values() if m.unusable]
    if unusable:
        print("unusable models (skipped when routing):")
        for model in unusable:
            print(f"  {model.name}: {model.unusable}")
    print(f"keys: {', '.join(k.name for k in config.keys) or 'none (anonymous access)'}")
    print(f"cache: {_cache_scopes(config)}")
    if config.notes:
        print("warnings:")
        for note in config.notes:
            print(f"  {note}")
    return 0


def _shown_step(config: Config, step: Step) -> str:
    """`claude-us`, or a group: `[claude-us | claude-eu] (weighted 3:1)`."""
    def name(model: str) -> str:
        return f"{model} (unusable)" if config.models[model].unusable else model

    if isinstance(step, str):
        return name(step)
    how = step.balance
    if step.balance == "weighted":
        how += " " + ":".join(f"{step.weight(m):g}" for m in step.members)
    return f"[{' | '.join(name(m) for m in step.members)}] ({how})"


def _cache_scopes(config: Config) -> str:
    """Who shares cached answers with whom: what an operator checks before a tenant can."""
    cache = config.settings.cache
    if not cache.enabled:
        return "off (settings.cache.enabled: false)"
    shown = "per key" if cache.scope == "key" else "shared by the keys in no group"
    groups: dict[str, list[str]] = {}
    for key in config.keys:
        if key.cache_scope is not None:
            groups.setdefault(key.cache_scope, []).append(key.name)
    named = "; ".join(f"group {group}: {', '.join(names)}" for group, names in groups.items())
    return f"{shown} (settings.cache.scope: {cache.scope})" + (f", except {named}" if named else "")


def cmd_keys_new(args: argparse.Namespace) -> int:
    if args.daily_budget is not None and args.daily_budget < 0:
        print("--daily-budget must be zero or more (USD)", file=sys.stderr)
        return 2
    key = "sk-gw-" + secrets.token_urlsafe(32)
    digest = hashlib.sha256(key.encode()).hexdigest()
    print(f"New key for {args.name} (shown once, store it now):\n\n  {key}\n")
    print("Paste this under keys: in router.yaml (it holds the key's SHA-256, not the key):\n")
    print(f"  - name: {args.name}")
    print(f"    key_sha256: {digest}")
    if args.daily_budget is not None:
        print(f"    daily_budget_usd: {args.daily_budget:.2f}")
    return 0


def cmd_spend(args: argparse.Namespace) -> int:
    import asyncio

    from gateway import store
    from gateway.money import budget

    path = _config_path(args.config)
    config = _load_or_exit(path)
    try:
        day = date.fromisoformat(args.date) if args.date else budget.today()
    except ValueError:
        print(f"--date must be YYYY-MM-DD; got {args.date!r}", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        url = config.settings.redis_url
        try:
            if not url:
                url = stack.enter_context(embedded_store.reached(
                    config.resolve_path(config.settings.data_dir)))
            spent = asyncio.run(_spend_on(url, day))
        except (EmbeddedStoreError, store.StoreDown) as exc:
            print(f"{path}: cannot read spend: {exc}", file=sys.stderr)
            return 1
    print(f"Spend on {day.isoformat()} (UTC), from {store.describe(url)}\n")
    rows = budget.spend_rows(config.keys, spent)
    table = [("key", "spent USD", "budget USD", "left USD")]
    for row in rows:
        left = None if row.budget is None else max(row.budget - row.spent, 0)
        name = row.key if row.configured else f"{row.key} (not in {path.name})"
        table.append((name, _usd(row.spent), _usd(row.budget), _usd(left)))
    table.append(("total", _usd(sum(spent.values())), "", ""))
    widths = [max(len(line[i]) for line in table) for i in range(4)]
    for line in table:
        print(line[0].ljust(widths[0]), *(cell.rjust(w) for cell, w in zip(line[1:], widths[1:],
                                                                            strict=True)),
              sep="  ")
    return 0


def _usd(micro: int | None) -> str:
    from gateway.money import cost

    return "-" if micro is None else cost.usd(micro)


async def _spend_on(url: str, day: date) -> dict[str, int]:
    from gateway import book
    from gateway.money.budget import Budgets
    from gateway.money.ledger import Ledger
    from gateway.store import Store

    spend_store = Store(url)
    try:
        return await Budgets(Ledger(spend_store, book.SCRIPT), hold_s=0).spend_on(day)
    finally:
        await spend_store.close()


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo.demo import run_demo

    return run_demo(args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the proxy")
    serve.add_argument("--config", help="router.yaml (default: $GATEWAY_CONFIG or ./router.yaml)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(run=cmd_serve)
    check = sub.add_parser("check", help="validate router.yaml without serving")
    check.add_argument("--config")
    check.set_defaults(run=cmd_check)
    keys = sub.add_parser("keys", help="manage keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    new = keys_sub.add_parser("new", help="print a new key and its router.yaml snippet")
    new.add_argument("--name", required=True)
    new.add_argument("--daily-budget", type=float, metavar="USD")
    new.set_defaults(run=cmd_keys_new)
    spend = sub.add_parser("spend", help="print each key's spend for a day, from the store")
    spend.add_argument("--config")
    spend.add_argument("--date", help="YYYY-MM-DD, UTC (default: today)")
    spend.set_defaults(run=cmd_spend)
    demo = sub.add_parser("demo", help="a gateway on built-in mock providers: no keys, no network")
    demo.add_argument("--port", type=int, default=DEFAULT_PORT)
    demo.set_defaults(run=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))
