"""The ``imagebot`` command: run the bot, and operator tools for credits, usage and providers."""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import logging
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .app import build_core
from .config import Config, load_config
from .core import Imagebot
from .errors import ConfigError, ImagebotError
from .models import Identity
from .replies import error_text

log = logging.getLogger("imagebot")
SINCE_RE = re.compile(r"^(\d+)\s*([smhdw])$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str) -> float:
    match = SINCE_RE.match(text.strip().lower())
    if not match:
        raise ConfigError(f"--since must look like 30m, 12h, 7d or 2w; got {text!r}")
    return int(match[1]) * UNITS[match[2]]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imagebot", description="Generate images from chat.")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("run", help="start every configured platform (with no tokens: the local console)")

    credits = sub.add_parser("credits", help="show or change a user's credits")
    actions = credits.add_subparsers(dest="action", required=True)
    for action, text in (("show", "show the balance"), ("grant", "add credits"), ("revoke", "take credits away"),
                         ("set", "set the balance")):
        p = actions.add_parser(action, help=text)
        if action != "show":
            lo = 0 if action == "set" else 1
            p.add_argument("amount", help=f"a whole number from {lo} to 1000000")
            p.add_argument("--note", default=None, help="a reason recorded with the change")
        p.add_argument("--platform", required=True, help="discord, slack or console")
        p.add_argument("--server", required=True, help="guild id, workspace (team) id, or 'local'")
        p.add_argument("--user", required=True, help="the platform's user id")
        p.add_argument("--json", action="store_true", help="print JSON")

    usage = sub.add_parser("usage", help="usage per user, provider and status")
    usage.add_argument("--since", default="7d", help="a period such as 24h, 7d, 4w (default 7d)")
    usage.add_argument("--server", default=None, help="only this server, as platform:id")
    fmt = usage.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--csv", action="store_true")

    providers = sub.add_parser("providers", help="list configured providers, models and sizes")
    providers.add_argument("--json", action="store_true")
    return parser


async def _with_core(config: Config, fn: Callable[[Imagebot], Awaitable[int]], *, read_only: bool = False) -> int:
    """An operator command: the core without the reservation sweep (an operator's command never
    releases anything); ``read_only`` for looks, which write nothing at all."""
    core = build_core(config, read_only=read_only)
    await core.start(catalogue=False)
    try:
        return await fn(core)
    finally:
        await core.close()


async def cmd_credits(core: Imagebot, args: argparse.Namespace) -> int:
    target = Identity(args.platform.strip().lower(), args.server.strip(), args.user.strip())
    if not all((target.platform, target.server_id, target.user_id)):
        raise ConfigError("--platform, --server and --user must not be empty")
    if args.action == "show":
        summary = await core.credits(target)
        data: dict[str, Any] = {
            "platform": target.platform, "server": target.server_id, "user": target.user_id,
            "balance": summary.balance, "held": summary.held, "spent": summary.spent, "images": summary.images,
        }
        text = f"{target}: balance {summary.balance} (held {summary.held}, spent {summary.spent})"
    else:
        result = await core.adjust("cli:operator", target, args.action, args.amount, note=args.note)
        data = {
            "platform": target.platform, "server": target.server_id, "user": target.user_id,
            "action": args.action, "amount": result.amount, "old_balance": result.old_balance,
            "balance": result.new_balance,
        }
        text = f"{target}: {args.action} {result.amount}: balance {result.old_balance} -> {result.new_balance}"
    print(json.dumps(data) if args.json else text)
    return 0


async def cmd_usage(core: Imagebot, args: argparse.Namespace) -> int:
    seconds = parse_since(args.since)
    rows = await core.store.usage(time.time() - seconds, args.server)
    if args.json:
        print(json.dumps({"since_seconds": seconds, "rows": rows}))
    elif args.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=["platform", "server_id", "user_id", "provider", "status",
                                                        "requests", "images", "credits", "input_tokens",
                                                        "output_tokens"])
        writer.writeheader()
        writer.writerows(rows)
    else:
        if not rows:
            print(f"No usage in the last {args.since}.")
        for r in rows:
            print(f"{r['platform']}:{r['server_id']}:{r['user_id']}  {r['provider'] or '-'}  {r['status']}  "
                  f"requests={r['requests']} images={r['images']} credits={r['credits']} "
                  f"tokens={r['input_tokens']} in/{r['output_tokens']} out")
    return 0


async def cmd_providers(config: Config, args: argparse.Namespace) -> int:
    """Each provider's models as its vendor lists them today: active, deprecated (shutdown date, days
    left) or retired, with a warning for any model shutting down within 30 days."""
    from providers.catalogue import WARN_DAYS, key_of, today
    from providers.registry import build_registry

    registry = build_registry(config)
    try:
        await registry.refresh(strict=True)
        now = today()
        out: list[dict[str, Any]] = []
        for name in registry.names():
            p = registry.providers[name]
            listing = registry.catalogue.listings.get(key_of(p))
            out.append({
                "name": name,
                "default_model": p.capabilities.default_model,
                "concurrency": p.capabilities.concurrency,
                "source": listing.source if listing else "fixed",
                "notes": list(getattr(p, "notes", ())),
                "models": [_model_entry(m, listing.status_of(m, now) if listing else m.status(now), now)
                           for m in (listing.models if listing else p.capabilities.models)],
            })
        enhancer = registry.enhancer
        text_listing = registry.catalogue.listings.get(key_of(enhancer))
        text_models = [_model_entry(m, text_listing.status_of(m, now), now, image=False)
                       for m in text_listing.models] if text_listing else []
        text: dict[str, Any] = {
            "name": enhancer.name, "model": enhancer.model,
            "source": text_listing.source if text_listing else "fixed",
            "models": text_models,
        }
        warnings = [w for listing in registry.catalogue.listings.values() for w in listing.warnings(now)]
    finally:
        await registry.aclose()
    if args.json:
        print(json.dumps({"providers": out, "order": registry.order, "enhancer": text, "warnings": warnings,
                          "warn_days": WARN_DAYS}))
        return 0
    for entry in out:
        where = " (built-in defaults: the vendor could not be asked)" if entry["source"] == "built-in" else ""
        print(f"{entry['name']} (default model {entry['default_model']}){where}")
        for m in entry["models"]:
            print(f"  {m['name']}: {_lifecycle_text(m)}; {m['sizes_text']} ({', '.join(_extras(m))})")
        for note in entry["notes"]:
            print(f"  note: {note}")
    print(f"failover order: {' -> '.join(registry.order)}")
    print(f"prompt enhancer: {text['name']} ({text['model'] or 'built in'})")
    for m in text_models:
        print(f"  {m['name']}: {_lifecycle_text(m)}")
    for warning in warnings:
        print(f"warning: {warning}")
    return 0


def _model_entry(model: Any, status: str, now: str, *, image: bool = True) -> dict[str, Any]:
    from providers.catalogue import days_left

    entry: dict[str, Any] = {"name": model.name, "status": status, "shutdown_date": model.shutdown_date,
                             "days_left": days_left(model.shutdown_date, now) if model.shutdown_date else None}
    if image:
        entry.update({
            "family": model.family, "sizes": list(model.sizes), "sizes_text": model.describe_sizes(),
            "ratios": list(model.ratios()), "qualities": list(model.qualities), "formats": list(model.formats),
            "backgrounds": list(model.backgrounds), "max_per_call": model.max_per_call,
            "reference_images": model.supports_reference, "streaming": model.streaming,
            "upscale": model.supports_upscale, "prompt_limit": model.prompt_limit,
        })
    return entry


def _lifecycle_text(m: dict[str, Any]) -> str:
    if m["status"] == "deprecated":
        return f"deprecated, shuts down {m['shutdown_date']} ({m['days_left']} days left)"
    if m["status"] == "retired":
        since = f" since {m['shutdown_date']}" if m["shutdown_date"] else ""
        return f"retired{since}"
    return "active"


def _extras(m: dict[str, Any]) -> list[str]:
    extras = [f"{m['max_per_call']} per call", "quality " + "/".join(m["qualities"])]
    if m["formats"]:
        extras.append("/".join(m["formats"]))
    if m["backgrounds"]:
        extras.append("background " + "/".join(m["backgrounds"]))
    if m["reference_images"]:
        extras.append("reference images")
    if m["streaming"]:
        extras.append("previews")
    if m["upscale"]:
        extras.append("upscale")
    return extras


async def cmd_run(config: Config) -> int:
    from .platforms import build_process
    from .worker import Worker

    core = build_core(config)
    await core.start(sweep=True)  # only a running bot releases reservations whose lease expired
    process = None
    worker: Worker | None = None
    try:
        process = build_process(core, config)
        runners = process.runners
        if config.role == "ingress" and not runners:
            raise ConfigError("IMAGEBOT_ROLE=ingress takes commands, but no chat platform token is set "
                              "(SLACK_BOT_TOKEN or DISCORD_TOKEN)")
        if process.couriers:
            worker = Worker(core, process.couriers)
            runners.append(worker.run())
        elif config.role == "worker":
            raise ConfigError("IMAGEBOT_ROLE=worker delivers results, but no chat platform token is set "
                              "(SLACK_BOT_TOKEN or DISCORD_TOKEN)")
        if not runners:
            from .console import run_console

            log.info("no chat token set: starting the local console (offline, local renderer)")
            runners = [run_console(core)]
        if process.web is not None:
            await process.web.start()
        log.info("imagebot: role %s (holder %s)", config.role, core.store.holder[:8])
        main = asyncio.gather(*runners)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, main.cancel)
            except (NotImplementedError, RuntimeError):
                pass
        try:
            await main
        except asyncio.CancelledError:
            log.info("shutting down")
    finally:
        if worker is not None:
            await worker.close()
        if process is not None:
            if process.web is not None:
                await process.web.stop()
            for courier in process.couriers.values():
                await courier.aclose()
        await core.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        config = load_config()
        if args.command == "run":
            return asyncio.run(cmd_run(config))
        if args.command == "credits":
            return asyncio.run(_with_core(config, lambda core: cmd_credits(core, args),
                                          read_only=args.action == "show"))
        if args.command == "usage":
            return asyncio.run(_with_core(config, lambda core: cmd_usage(core, args), read_only=True))
        if args.command == "providers":
            return asyncio.run(cmd_providers(config, args))
    except ConfigError as exc:
        print(f"imagebot: configuration error: {exc.message}", file=sys.stderr)
        return 2
    except ImagebotError as exc:
        print(f"imagebot: {error_text(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
