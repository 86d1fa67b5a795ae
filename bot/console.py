"""The local console: the same commands as chat, typed in a terminal, with no chat platform at all.

It is what ``imagebot run`` starts when no chat token is set: the bot works offline on SQLite and the
local renderer. The console's person is the operator, so the admin forms of /credits work too. While a
model streams, each preview (a partial image, free) is saved by the core and its path printed at once.
Each command is a job of the shared runner (``bot.jobs``), so shutdown drains it as on Discord and Slack.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import sys
import threading
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


def stdin_reader(fd: int = 0, encoding: str | None = None) -> Callable[[], str]:
    """A blocking readline on the descriptor itself ("" at end of input).

    ``os.read`` rather than ``sys.stdin``: the read runs in a daemon thread that is abandoned at shutdown,
    and a thread left inside ``sys.stdin.readline`` holds the buffer's lock, which the interpreter then
    trips over while it exits."""
    buffer = bytearray()
    codec = encoding or getattr(sys.stdin, "encoding", None) or "utf-8"

    def readline() -> str:
        while b"\n" not in buffer:
            chunk = os.read(fd, 65536)
            if not chunk:
                rest = bytes(buffer)
                buffer.clear()
                return rest.decode(codec, errors="replace")
            buffer.extend(chunk)
        end = buffer.index(b"\n") + 1
        line = bytes(buffer[:end])
        del buffer[:end]
        return line.decode(codec, errors="replace")

    return readline


async def read_abandonable(read: Callable[[], str]) -> str:
    """``read()`` in a daemon thread: a cancel (SIGTERM, Ctrl-C) returns at once, and the process can exit
    with the thread still waiting for input (``asyncio.to_thread`` would hold the exit until Enter)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[str] = loop.create_future()

    def settle(value: str | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value or "")

    def work() -> None:
        try:
            value, error = read(), None
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting coroutine
            value, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, value, error)
        except RuntimeError:  # the loop is gone: nobody is waiting any more
            pass

    threading.Thread(target=work, name="console-input", daemon=True).start()
    return await future


def stopping_text(busy: int, grace: float) -> str:
    """What the console says when stopped (SIGTERM, Ctrl-C): whether a command is still being finished."""
    if not busy:
        return "Stopped."
    return (f"Stopping: waiting up to {grace:.0f} s for the command in progress to finish "
            "(press Ctrl-C again to stop it now; you are not charged for it then).")


async def run_console(core: Imagebot, *, stdin: Callable[[], str] | None = None, out: TextIO | None = None,
                      grace: float = DEFAULT_GRACE) -> None:
    """Read commands until /quit or EOF. Stopped (SIGTERM, Ctrl-C: a cancel) while waiting for input, it
    ends at once; mid-command, it waits up to ``grace`` seconds for that command to finish (a second stop
    cancels it, refunded), as the chat adapters do. Each outcome is printed."""
    out = out or sys.stdout
    ctx = console_context()
    read = stdin or stdin_reader()
    runner = JobRunner(core, grace=grace)

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    print("imagebot local console (offline). Type /help for commands, /quit to leave.", file=out, flush=True)
    try:
        while True:
            print("> ", end="", file=out, flush=True)
            line = await read_abandonable(read)
            if not line or line.strip().lower() in ("/quit", "/exit", "quit", "exit"):
                print("bye", file=out, flush=True)
                return
            reply = await handle_line(core, ctx, line, notify=say, runner=runner)
            if reply:
                say(reply)
    except asyncio.CancelledError:
        say("\n" + stopping_text(runner.busy, grace))
        raise
    finally:
        await runner.close()
