"""The local console: the same commands as chat, typed in a terminal, with no chat platform at all.

It is what ``imagebot run`` starts when no chat token is set: the bot works offline on SQLite and the
local renderer. The console's person is the operator, so the admin forms of /credits work too. While a
model streams, each preview (a partial image, free) is saved by the core and its path printed at once.
"""

from __future__ import annotations

import asyncio
import getpass
import sys
from collections.abc import Callable
from typing import Any, TextIO

from .core import Imagebot, Progress
from .errors import ImagebotError
from .models import Context, Identity
from .replies import (
    adjust_summary,
    credits_summary,
    enhance_summary,
    error_text,
    imagine_summary,
    usage_summary,
)
from .textcommands import mention_user_id, parse_credits, parse_imagine

HELP = """Commands:
  /imagine <prompt> [--size WxH|square|landscape|portrait|16:9|21:9|3:2|4:3|9:16|...]
                    [--style natural|vivid|artistic|photographic] [--quality low|medium|high|max]
                    [--format png|webp|jpeg] [--background transparent|opaque|auto]
                    [--count N] [--provider NAME[/MODEL]]
           (--aspect is the same as --size; --quality standard and hd mean medium and high)
  /enhance <prompt>
  /credits [grant|revoke|set <user> <amount> | usage]
  /help, /quit"""


def console_context() -> Context:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        user = "local"
    return Context(Identity("console", "local", user), channel_id="console", is_admin=True, display_name=user)


def preview_line(details: dict[str, Any]) -> str:
    return f"preview {details.get('index', '?')} saved: {details.get('path')}"


async def handle_line(core: Imagebot, ctx: Context, line: str, *, notify: Callable[[str], None] | None = None) -> str:
    """One typed line -> the reply text (errors included, as a person would see them).

    ``notify`` hears what happens while a command runs (a preview saved, and where)."""
    text = line.strip()
    if not text:
        return ""
    command, _, rest = text.partition(" ")
    command = command.lower().lstrip("/")
    try:
        if command == "imagine":
            result = await core.imagine(ctx, parse_imagine(rest), progress=_progress(notify))
            paths = "\n".join(f"  {image.path}" for image in result.images)
            return f"{imagine_summary(result)}\nSaved:\n{paths}"
        if command == "enhance":
            return enhance_summary(await core.enhance(ctx, rest))
        if command == "credits":
            parsed = parse_credits(rest)
            if parsed.action == "show":
                return credits_summary(await core.credits(ctx.identity))
            if parsed.action == "usage":
                return usage_summary(await core.usage_report(ctx))
            target = Identity(ctx.identity.platform, ctx.identity.server_id, mention_user_id(parsed.target or ""))
            adjusted = await core.admin_adjust(ctx, target, parsed.action, parsed.amount)
            return adjust_summary(adjusted, target.user_id)
        if command in ("help", "?"):
            return HELP
        return f"Unknown command /{command}. Type /help."
    except ImagebotError as exc:
        return f"Error: {error_text(exc)}"


def _progress(notify: Callable[[str], None] | None) -> Progress | None:
    if notify is None:
        return None

    async def progress(stage: str, details: dict[str, Any]) -> None:
        if stage == "preview":
            notify(preview_line(details))

    return progress


async def run_console(core: Imagebot, *, stdin: Callable[[], str] | None = None, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    ctx = console_context()
    read = stdin or (lambda: sys.stdin.readline())
    print("imagebot local console (offline). Type /help for commands, /quit to leave.", file=out, flush=True)
    while True:
        print("> ", end="", file=out, flush=True)
        line = await asyncio.to_thread(read)
        if not line or line.strip().lower() in ("/quit", "/exit", "quit", "exit"):
            print("bye", file=out, flush=True)
            return
        reply = await handle_line(core, ctx, line, notify=lambda text: print(text, file=out, flush=True))
        if reply:
            print(reply, file=out, flush=True)
