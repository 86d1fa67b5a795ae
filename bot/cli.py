"""The ``imagebot`` command: run the bot, and operator tools for credits, usage, providers, backups and
pruning the image store.

With ``--json`` a command answers in JSON on stdout, its errors too (``{"error": {"code", "message"}}``),
with the same exit codes as in plain text: 2 for a bad command line or configuration, 1 for a refusal.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import difflib
import json
import logging
import os
import re
import signal
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn
from urllib.request import pathname2url

from storage.images import ImageStore

from .app import build_core, build_ledger
from .config import Config, load_config, sqlite_path
from .core import Imagebot
from .errors import ConfigError, ImagebotError, StorageError
from .logs import setup_logging
from .models import Identity
from .replies import error_text, plural

log = logging.getLogger("imagebot")
SINCE_RE = re.compile(r"^(\d+)\s*([smhdw])$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
AGE_RE = re.compile(r"^(\d{1,6})\s*([dh])$")
#: ``--older-than`` reads days or hours: images are kept for weeks, so smaller units would be a typo.
AGE_UNITS = {"d": 86400, "h": 3600}
#: The platforms an account can belong to (an id outside these would open an account no one can use).
PLATFORMS = ("console", "discord", "slack")


class UsageError(ImagebotError):
    """A command line the operator must correct (exit 2); nothing was opened or changed."""

    code = "IMG-CLI-USAGE"

    def __init__(self, message: str, *, code: str | None = None, usage: str = "") -> None:
        super().__init__(message, code=code)
        self.usage = usage


class Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so ``--json`` can word its errors as JSON too."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}", usage=self.format_usage())


def parse_since(text: str) -> float:
    match = SINCE_RE.match(text.strip().lower())
    if not match:
        raise UsageError(f"--since must look like 30m, 12h, 7d or 2w; got {text!r}")
    return int(match[1]) * UNITS[match[2]]


def parse_older_than(text: str) -> int:
    """``--older-than 90d`` (or ``36h``) -> seconds; zero, other units and anything else are refused."""
    match = AGE_RE.match(text.strip().lower())
    if not match:
        hint = " (add the unit: d for days, h for hours)" if text.strip().isdigit() else ""
        raise UsageError(f"--older-than must look like 90d or 36h (days or hours); got {text!r}{hint}. "
                         "Nothing was removed.", code="IMG-CLI-AGE")
    seconds = int(match[1]) * AGE_UNITS[match[2]]
    if seconds <= 0:
        raise UsageError(f"--older-than must be more than zero; got {text!r} (that would remove every image "
                         "the ledger no longer needs, however new). Nothing was removed.", code="IMG-CLI-AGE")
    return seconds


def credits_target(args: argparse.Namespace) -> Identity:
    """The account named on the command line, checked before any database is opened (a typo such as
    ``--platform discrod`` must not open an account with starting credits)."""
    platform = args.platform.strip().lower()
    target = Identity(platform, args.server.strip(), args.user.strip())
    if not all((target.platform, target.server_id, target.user_id)):
        raise UsageError("--platform, --server and --user must not be empty")
    if platform not in PLATFORMS:
        close = difflib.get_close_matches(platform, PLATFORMS, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UsageError(f"--platform must be one of {', '.join(PLATFORMS)}; got {args.platform!r}{hint}. "
                         "Nothing was changed.", code="IMG-CLI-PLATFORM")
    return target


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="imagebot", description="Generate images from chat.")
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
        p.add_argument("--platform", required=True, help=", ".join(PLATFORMS))
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

    backup = sub.add_parser("backup", help="copy the SQLite database consistently, even while the bot runs")
    backup.add_argument("path", help="the file to write (refused if it exists, unless --force)")
    backup.add_argument("--force", action="store_true", help="replace PATH if it exists")
    backup.add_argument("--json", action="store_true", help="print JSON")

    prune = sub.add_parser("prune", help="remove old stored images the ledger no longer needs (keeps every "
                                         "ledger row)")
    prune.add_argument("--older-than", required=True, metavar="AGE",
                       help="only files not used for this long, such as 90d or 36h; images of generations made "
                            "since then, and of jobs not finished, are always kept")
    prune.add_argument("--dry-run", action="store_true", help="count what would go; remove nothing")
    prune.add_argument("--json", action="store_true", help="print JSON")
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
    target = credits_target(args)
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
        return f"deprecated, shuts down {m['shutdown_date']} ({plural(m['days_left'], 'day')} left)"
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
        stops: list[str] = []

        def stop(sig: signal.Signals) -> None:
            """The first signal stops new commands and lets jobs in flight finish (within their grace); a
            second one cancels what is left (refunded, each asker told)."""
            stops.append(sig.name)
            if process is not None and process.web is not None:
                process.web.draining = True  # /readyz says so: the load balancer sends no more
            if len(stops) == 1:
                log.info("shutting down (%s): no new commands; jobs in flight may finish", sig.name)
            else:
                log.warning("%s again: stopping now; jobs still running are cancelled and refunded", sig.name)
            main.cancel()

        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop, sig)
            except (NotImplementedError, RuntimeError):
                pass
        try:
            await main
        except asyncio.CancelledError:
            log.info("stopped taking commands; closing")
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


async def cmd_prune(config: Config, args: argparse.Namespace) -> int:
    """Remove stored image files that are older than ``--older-than`` and that no generation made since
    then (nor any job still to finish) names, with old previews and dead temporary files
    (``ImageStore.prune``). The ledger is opened read-only: every ledger and generation row stays."""
    age = parse_older_than(args.older_than)
    source = sqlite_path(config.database)
    if source is not None and not source.is_file():
        raise UsageError(f"There is no database at {str(source)!r}: without the ledger, imagebot cannot tell "
                         "which images are still needed. Nothing was removed.", code="IMG-PRUNE-NODB")
    if source is None and config.database.strip().lower().startswith("memory:"):
        raise UsageError("IMAGEBOT_DATABASE is memory://: it keeps no ledger to tell which images are still "
                         "needed. Nothing was removed.", code="IMG-PRUNE-NODB")
    ledger = build_ledger(config, read_only=True)
    await ledger.open()
    try:
        cutoff = time.time() - age
        keep = await ledger.live_images(cutoff)
    finally:
        await ledger.close()
    images = ImageStore(config.data_dir)
    try:
        files, freed = await images.prune(keep, cutoff, dry_run=args.dry_run)
    finally:
        images.close()
    if args.json:
        print(json.dumps({"older_than_seconds": age, "dry_run": bool(args.dry_run), "files": files,
                          "bytes": freed, "kept": len(keep)}))
        return 0
    verb = "Would remove" if args.dry_run else "Removed"
    freed_text = "would free" if args.dry_run else "freed"
    print(f"{verb} {plural(files, 'file')} not used for {args.older_than.strip()} and no longer needed by "
          f"the ledger ({_size_text(freed)} {freed_text}). No ledger row was changed.")
    if args.dry_run:
        print("Dry run: nothing was removed. Run again without --dry-run to remove them.")
    return 0


def _size_text(n: int) -> str:
    """Bytes as a person reads them: ``0 bytes``, ``812 KiB``, ``1.4 GiB``."""
    if n < 1024:
        return plural(n, "byte")
    size = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}" if size < 100 else f"{size:.0f} {unit}"
    raise AssertionError("unreachable")


def cmd_backup(config: Config, args: argparse.Namespace) -> int:
    """A consistent copy of the SQLite database, safe while the bot runs and writes.

    SQLite's online backup API, in one step: the copy is read inside one read transaction, so it is the
    database as it stood at one moment (in WAL mode the bot's writers are not held up meanwhile). The
    copy is written beside PATH, checked (``PRAGMA integrity_check``), then moved into place, so PATH is
    never a half-written file; it is a single file (journal mode DELETE) ready to restore."""
    source = sqlite_path(config.database)
    if source is None:
        scheme = config.database.strip().partition("://")[0].lower()
        if scheme.startswith("postgres"):
            raise UsageError("imagebot backup copies a SQLite database, and IMAGEBOT_DATABASE is PostgreSQL: "
                             "back it up with pg_dump (pg_dump --format=custom --file imagebot.dump "
                             "\"$IMAGEBOT_DATABASE\"; restore with pg_restore). Nothing was written.",
                             code="IMG-BACKUP-POSTGRES")
        raise UsageError(f"IMAGEBOT_DATABASE is {config.database.strip()!r}: it keeps nothing on disk to back up.",
                         code="IMG-BACKUP-NONE")
    if not source.is_file():
        raise UsageError(f"There is no database at {str(source)!r} yet: nothing to back up.",
                         code="IMG-BACKUP-NONE")
    dest = Path(args.path)
    if dest.is_dir():
        raise UsageError(f"{str(dest)!r} is a folder: give the backup's file name, such as "
                         f"{str(dest / 'imagebot-backup.sqlite3')!r}. Nothing was written.", code="IMG-BACKUP-PATH")
    if not dest.parent.is_dir():
        raise UsageError(f"There is no folder {str(dest.parent)!r} to write the backup in. Nothing was written.",
                         code="IMG-BACKUP-PATH")
    if dest.exists() and dest.resolve() == source.resolve():
        raise UsageError("The backup cannot replace the database itself. Nothing was written.",
                         code="IMG-BACKUP-PATH")
    if dest.exists() and not args.force:
        raise UsageError(f"{str(dest)!r} already exists; nothing was written. Add --force to replace it.",
                         code="IMG-BACKUP-EXISTS")
    partial = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    try:
        summary = _copy_database(source, partial)
        _place(partial, dest, replace=args.force)
    finally:
        partial.unlink(missing_ok=True)
    size = dest.stat().st_size
    if args.json:
        print(json.dumps({"source": str(source), "backup": str(dest), "bytes": size, **summary}))
    else:
        print(f"Backed up {source} to {dest}: {plural(summary['accounts'], 'account')}, "
              f"{plural(summary['ledger_rows'], 'ledger row')}, {plural(size, 'byte')}; "
              "integrity check ok.")
    return 0


def _copy_database(source: Path, target: Path) -> dict[str, int]:
    """Copy ``source`` into the new file ``target`` in one backup step, and check the copy."""
    src = sqlite3.connect(f"file:{pathname2url(str(source.resolve()))}?mode=ro", uri=True, timeout=30.0)
    try:
        src.execute("PRAGMA busy_timeout=30000")
        dst = sqlite3.connect(str(target), timeout=30.0)
        try:
            src.backup(dst)  # pages=-1: the whole database in one step, one read transaction: one moment
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            checked = [row[0] for row in dst.execute("PRAGMA integrity_check")]
            counts = {table: _count(dst, table) for table in ("accounts", "ledger")}
        finally:
            dst.close()
    finally:
        src.close()
    if checked != ["ok"]:
        raise StorageError(f"The copy failed its integrity check ({'; '.join(checked[:3])}); nothing was written. "
                           "Check the database with `sqlite3 FILE 'PRAGMA integrity_check'`.", code="IMG-BACKUP-CHECK")
    return {"accounts": counts["accounts"], "ledger_rows": counts["ledger"]}


def _count(conn: sqlite3.Connection, table: str) -> int:
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
    return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]) if exists else 0


def _place(partial: Path, dest: Path, *, replace: bool) -> None:
    """Move the checked copy to ``dest``: atomically, and without ``replace`` never over a file that
    appeared meanwhile (a hard link fails if ``dest`` exists)."""
    if replace:
        os.replace(partial, dest)
        return
    try:
        os.link(partial, dest)
    except FileExistsError:
        raise UsageError(f"{str(dest)!r} already exists; nothing was written. Add --force to replace it.",
                         code="IMG-BACKUP-EXISTS") from None
    except OSError:  # no hard links here (some network and FAT file systems)
        if dest.exists():
            raise UsageError(f"{str(dest)!r} already exists; nothing was written. Add --force to replace it.",
                             code="IMG-BACKUP-EXISTS") from None
        os.replace(partial, dest)


def _wants_json(argv: Sequence[str]) -> bool:
    return "--json" in argv[: argv.index("--")] if "--" in argv else "--json" in argv


def _fail(exc: ImagebotError, status: int, *, as_json: bool, prefix: str = "") -> int:
    """Say what went wrong, in JSON on stdout with ``--json``, else in words on stderr."""
    if as_json:
        print(json.dumps({"error": {"code": exc.code, "message": exc.message}}))
    elif isinstance(exc, UsageError) and exc.usage:
        print(f"{exc.usage.rstrip()}\n{exc.message}", file=sys.stderr)
    else:
        print(f"imagebot: {prefix}{error_text(exc) if status == 1 else exc.message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = _wants_json(argv)
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        return _fail(exc, 2, as_json=as_json)
    as_json = bool(getattr(args, "json", False))
    try:
        setup_logging(None, args.log_level)  # IMAGEBOT_LOG_FORMAT: text or json
        config = load_config()
        if args.command == "run":
            return asyncio.run(cmd_run(config))
        if args.command == "credits":
            credits_target(args)  # refused before any database is opened
            return asyncio.run(_with_core(config, lambda core: cmd_credits(core, args),
                                          read_only=args.action == "show"))
        if args.command == "usage":
            parse_since(args.since)
            return asyncio.run(_with_core(config, lambda core: cmd_usage(core, args), read_only=True))
        if args.command == "providers":
            return asyncio.run(cmd_providers(config, args))
        if args.command == "backup":
            return cmd_backup(config, args)
        if args.command == "prune":
            parse_older_than(args.older_than)  # refused before any database is opened
            return asyncio.run(cmd_prune(config, args))
    except ConfigError as exc:
        return _fail(exc, 2, as_json=as_json, prefix="configuration error: ")
    except UsageError as exc:
        return _fail(exc, 2, as_json=as_json)
    except ImagebotError as exc:
        return _fail(exc, 1, as_json=as_json)
    except (OSError, sqlite3.Error) as exc:
        # A file the bot cannot use (permissions, a full disk, a damaged database): said, not a traceback.
        problem = StorageError(f"{exc.strerror or exc}: {exc.filename}" if isinstance(exc, OSError) and exc.filename
                               else str(exc), code="IMG-STORE-001")
        return _fail(problem, 1, as_json=as_json, prefix="")
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
