"""The local console: the same commands as chat, typed in a terminal, with no chat platform at all.

It is what ``imagebot run`` starts when no chat token is set: the bot works offline on SQLite and the
local renderer. The console's person is the operator, so the admin forms of /credits work too. While a
model streams, each preview (a partial image, free) is saved by the core and its path printed at once.
Each command is a job of the shared runner (``bot.jobs``), so shutdown drains it as on Discord and Slack.
"""

from __future__ import annotations

import asyncio
import getpass
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from .core import Imagebot
from .errors import ImagebotError
from .jobs import DEFAULT_GRACE, Job, JobRunner, Outlet, Progress, Target
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


class ConsoleOutlet(Outlet[str]):
    """The console's one delivery target: the reply text, returned by ``handle_line`` (or printed at once
    through ``late`` when the console stopped waiting, at shutdown)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.late: Callable[[str], None] | None = None

    def targets(self, result: str) -> Sequence[Target[str]]:
        return [Target("console", self._show)]

    async def _show(self, text: str, failures: Sequence[BaseException]) -> None:
        await self.tell(text)

    async def tell(self, text: str) -> None:
        if self.late is not None:
            self.late(text)
        else:
            self.lines.append(text)

    async def failed(self, exc: Exception) -> None:
        if not isinstance(exc, ImagebotError):
            raise exc  # a bug: the console shows the traceback, as before
        await self.tell(f"Error: {error_text(exc)}")


class ConsoleProgress:
    """Previews (saved by the core) are announced as they arrive; other stages stay quiet."""

    def __init__(self, notify: Callable[[str], None]) -> None:
        self._notify = notify

    async def update(self, stage: str, details: dict[str, Any]) -> None:
        if stage == "preview":
            self._notify(preview_line(details))

    async def finish(self, result: object | None) -> None:
        return None


async def handle_line(core: Imagebot, ctx: Context, line: str, *, notify: Callable[[str], None] | None = None,
                      runner: JobRunner | None = None) -> str:
    """One typed line -> the reply text (errors included, as a person would see them).

    ``notify`` hears what happens while a command runs (a preview saved, and where). Commands run as jobs
    of ``runner`` (the shared job runner; a private one when None), like chat commands."""
    text = line.strip()
    if not text:
        return ""
    command, _, rest = text.partition(" ")
    command = command.lower().lstrip("/")
    if command in ("help", "?"):
        return HELP
    if command not in ("imagine", "enhance", "credits"):
        return f"Unknown command /{command}. Type /help."

    async def work(progress: Progress | None) -> str:
        return await _answer(core, ctx, command, rest, progress)

    outlet = ConsoleOutlet()
    job = Job(command, work, outlet, ConsoleProgress(notify) if notify is not None else None)
    own = runner is None
    runner = runner or JobRunner(core)
    try:
        await runner.run(job)
    except asyncio.CancelledError:
        outlet.late = notify  # the runner drains the job at shutdown: its answer is printed when it comes
        for said in outlet.lines:
            if notify is not None:
                notify(said)
        raise
    finally:
        if own:
            await runner.close()
    return "\n".join(outlet.lines)


async def _answer(core: Imagebot, ctx: Context, command: str, rest: str, progress: Progress | None) -> str:
    if command == "imagine":
        result = await core.imagine(ctx, parse_imagine(rest), progress=progress)
        paths = "\n".join(f"  {image.path}" for image in result.images)
        return f"{imagine_summary(result)}\nSaved:\n{paths}"
    if command == "enhance":
        return enhance_summary(await core.enhance(ctx, rest))
    parsed = parse_credits(rest)
    if parsed.action == "show":
        return credits_summary(await core.credits(ctx.identity))
    if parsed.action == "usage":
        return usage_summary(await core.usage_report(ctx))
    target = Identity(ctx.identity.platform, ctx.identity.server_id, mention_user_id(parsed.target or ""))
    adjusted = await core.admin_adjust(ctx, target, parsed.action, parsed.amount)
    return adjust_summary(adjusted, target.user_id)


async def run_console(core: Imagebot, *, stdin: Callable[[], str] | None = None, out: TextIO | None = None,
                      grace: float = DEFAULT_GRACE) -> None:
    """Read commands until /quit or EOF. Stopped (SIGTERM) mid-command, it waits up to ``grace`` seconds
    for that command to finish, as the chat adapters do."""
    out = out or sys.stdout
    ctx = console_context()
    read = stdin or (lambda: sys.stdin.readline())
    runner = JobRunner(core, grace=grace)

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    print("imagebot local console (offline). Type /help for commands, /quit to leave.", file=out, flush=True)
    try:
        while True:
            print("> ", end="", file=out, flush=True)
            line = await asyncio.to_thread(read)
            if not line or line.strip().lower() in ("/quit", "/exit", "quit", "exit"):
                print("bye", file=out, flush=True)
                return
            reply = await handle_line(core, ctx, line, notify=say, runner=runner)
            if reply:
                say(reply)
    finally:
        await runner.close()
