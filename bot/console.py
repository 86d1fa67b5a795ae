"""The local console: the same commands as chat, typed in a terminal, with no chat platform at all.

It is what ``imagebot run`` starts when no chat token is set: the bot works offline on SQLite and the
local renderer. The console's person is the operator, so the admin forms of /credits and /settings work
too. While a model streams, each preview (a partial image, free) is saved by the core and its path printed
at once. Each command is a job of the shared runner (``bot.jobs``), so shutdown drains it as on Discord
and Slack.

The chat platforms' buttons are commands here (``/edit``, ``/zoom``, ``/delete`` with the generation id
every result prints). The console has no delivery address, so it calls the core's in-process commands
(``Imagebot.edit``, ``outpaint``, ``describe``...) rather than queued jobs. A command the server's
``confirm_above`` prices too high asks "Confirm? [y/N]" on the terminal before anything is charged.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import stat
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .canvas import OPS
from .core import Imagebot
from .errors import ImagebotError, ValidationError
from .jobs import DEFAULT_GRACE, Job, JobRunner, Outlet, Progress, Target
from .models import Context, HistoryPage, Identity, ImagineOptions, ImagineResult
from .references import REFERENCE_LIMIT
from .replies import (
    adjust_summary,
    credits_summary,
    describe_summary,
    enhance_summary,
    error_text,
    help_text,
    imagine_summary,
    plural,
    settings_text,
    usage_summary,
)
from .textcommands import (
    DELETE_USAGE,
    DESCRIBE_USAGE,
    SHOW_USAGE,
    mention_user_id,
    parse_credits,
    parse_describe,
    parse_edit,
    parse_generation_id,
    parse_history,
    parse_imagine,
    parse_settings,
    parse_zoom,
)
from .validation import shown

HELP = """Commands:
  /imagine <prompt> [--size WxH|square|landscape|portrait|16:9|21:9|3:2|4:3|9:16|...]
                    [--style natural|vivid|artistic|photographic] [--quality low|medium|high|max]
                    [--format png|webp|jpeg] [--background transparent|opaque|auto]
                    [--count N] [--provider NAME[/MODEL]]
           (--aspect is the same as --size; --quality standard and hd mean medium and high)
  /enhance <prompt>
  /edit <id> [image N] <instruction>       change a result by an instruction (charged like a new image)
  /zoom <id> [image N] <op>                 op: zoom-1.5|zoom-2|pan-left|pan-right|pan-up|pan-down|square
  /describe <image file>                    four prompts suggested for a picture on this computer
  /history [page]                           your results, ten a page, with a contact sheet
  /show <id>, /delete <id>                  a result again (free); remove it from your history
  /settings [key value ...]                 this server's settings (quote a value with spaces: "a b")
  /credits [grant|revoke|set <user> <amount> | usage]
  /help, /quit
  (the id is printed under every result)"""
#: Commands whose words are typed after the slash, and their other spellings.
COMMANDS = ("imagine", "enhance", "credits", "edit", "zoom", "describe", "history", "show", "delete", "settings",
            "help")
ALIASES = {"?": "help", "outpaint": "zoom"}
#: The commands that cost credits, as the core's job kinds (quoted first: the server may want a confirm).
COSTLY = {"imagine": "imagine", "enhance": "enhance", "edit": "edit", "zoom": "outpaint", "describe": "describe"}
#: Answers that confirm a costly command.
YES = ("y", "yes")
Ask = Callable[[str], Awaitable[bool]]


@dataclass
class Request:
    """A typed line, parsed and checked before any job starts: the command and the core's arguments."""

    command: str
    args: dict[str, Any] = field(default_factory=dict)


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
                      runner: JobRunner | None = None, ask: Ask | None = None) -> str:
    """One typed line -> the reply text (errors included, as a person would see them).

    ``notify`` hears what happens while a command runs (a preview saved, and where). Commands run as jobs
    of ``runner`` (the shared job runner; a private one when None), like chat commands. ``ask`` puts a
    yes/no question to the person (the confirm step); with none, a command that needs a confirm is not run."""
    text = line.strip()
    if not text:
        return ""
    command, _, rest = text.partition(" ")
    command = command.lower().lstrip("/")
    command = ALIASES.get(command, command)
    if command not in COMMANDS:
        return f"Unknown command /{shown(command, 40)}. Type /help."
    try:
        request = await parse_request(core, ctx, command, rest)
        cancelled = await confirm(core, ctx, request, ask)
    except ImagebotError as exc:
        return f"Error: {error_text(exc)}"
    if cancelled:
        return cancelled

    async def work(progress: Progress | None) -> str:
        return await _answer(core, ctx, request, progress)

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


async def parse_request(core: Imagebot, ctx: Context, command: str, rest: str) -> Request:
    """The words after the command -> the core's arguments; bad input is refused here (``ValidationError``
    with a usage line), before any job, quote or charge."""
    if command == "imagine":
        return Request(command, {"options": parse_imagine(rest)})
    if command == "enhance":
        return Request(command, {"prompt": rest})
    if command == "edit":
        edit = parse_edit(rest)
        await _check_image_number(core, ctx, edit.generation_id, edit.index)
        return Request(command, {"generation_id": edit.generation_id, "index": edit.index, "prompt": edit.text})
    if command == "zoom":
        zoom = parse_zoom(rest)
        await _check_image_number(core, ctx, zoom.generation_id, zoom.index)
        return Request(command, {"generation_id": zoom.generation_id, "index": zoom.index, "op": zoom.text})
    if command == "describe":
        data = await asyncio.to_thread(read_image_file, parse_describe(rest))
        return Request(command, {"options": ImagineOptions(prompt="", reference=data)})
    if command == "history":
        return Request(command, {"page": parse_history(rest)})
    if command == "show":
        return Request(command, {"generation_id": parse_generation_id(rest, SHOW_USAGE)})
    if command == "delete":
        return Request(command, {"generation_id": parse_generation_id(rest, DELETE_USAGE)})
    if command == "settings":
        return Request(command, {"changes": parse_settings(rest)})
    if command == "credits":
        return Request(command, {"parsed": parse_credits(rest)})
    return Request(command)


async def _check_image_number(core: Imagebot, ctx: Context, generation_id: str, index: int) -> None:
    """``image N`` beyond what the result has is a typo to say, not an image to guess (the core would take
    the last one). An id unknown here is left to the core, which says so."""
    gen = await core.generation(generation_id)
    if gen is None or (gen.platform, gen.server_id) != (ctx.identity.platform, ctx.identity.server_id):
        return
    if gen.images and index >= len(gen.images):
        raise ValidationError(f"That result has {plural(len(gen.images), 'image')}: there is no image {index + 1}.",
                              code="IMG-VALID-IMAGE")


def read_image_file(name: str) -> bytes:
    """The picture /describe reads: a file on the operator's computer (``~`` works). A folder, a missing
    or unreadable file, an empty one and one over the reference limit are refused, naming the file."""
    path = Path(name).expanduser()
    label = shown(name, 80)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ValidationError(f"There is no file {label!r}. {DESCRIBE_USAGE}", code="IMG-VALID-FILE") from None
    except OSError as exc:
        raise ValidationError(f"{label!r} cannot be read ({exc.strerror or 'not readable'}).",
                              code="IMG-VALID-FILE") from None
    if stat.S_ISDIR(info.st_mode):
        raise ValidationError(f"{label!r} is a folder: give one image file in it. {DESCRIBE_USAGE}",
                              code="IMG-VALID-FILE")
    if not stat.S_ISREG(info.st_mode):
        raise ValidationError(f"{label!r} is not a regular file. {DESCRIBE_USAGE}", code="IMG-VALID-FILE")
    limit = REFERENCE_LIMIT // (1024 * 1024)
    if info.st_size > REFERENCE_LIMIT:
        raise ValidationError(f"{label!r} is {info.st_size / (1024 * 1024):.1f} MiB; an image to describe may be "
                              f"at most {limit} MiB.", code="IMG-VALID-FILE")
    if info.st_size == 0:
        raise ValidationError(f"{label!r} is empty.", code="IMG-VALID-FILE")
    try:
        with path.open("rb") as handle:
            data = handle.read(REFERENCE_LIMIT + 1)
    except OSError as exc:
        raise ValidationError(f"{label!r} cannot be read ({exc.strerror or 'not readable'}).",
                              code="IMG-VALID-FILE") from None
    if len(data) > REFERENCE_LIMIT:  # it grew meanwhile
        raise ValidationError(f"{label!r} is over {limit} MiB.", code="IMG-VALID-FILE")
    return data


async def confirm(core: Imagebot, ctx: Context, request: Request, ask: Ask | None) -> str | None:
    """The confirm step: a costly command the server's threshold catches asks first. None: go ahead;
    otherwise what to say (cancelled, nothing charged). The core's proposal is not used: the console
    runs the command itself once the person says yes."""
    kind = COSTLY.get(request.command)
    if kind is None or not (await core.rules(ctx)).confirm_above:
        return None
    quote = await core.quote(ctx, kind, propose=False, **request.args)
    if not quote.confirm or quote.balance_after < 0:
        return None  # cheap enough, or more than the balance: the core's own refusal says so
    question = (f"This costs {plural(quote.price, 'credit')}; your balance after it would be {quote.balance_after}. "
                "Confirm? [y/N] ")
    if ask is not None and await ask(question):
        return None
    return "Cancelled: nothing was charged."


async def _answer(core: Imagebot, ctx: Context, request: Request, progress: Progress | None) -> str:
    command, args = request.command, request.args
    if command == "imagine":
        return await result_text(core, ctx, await core.imagine(ctx, args["options"], progress=progress))
    if command == "edit":
        result = await core.edit(ctx, args["generation_id"], args["index"], args["prompt"], progress=progress)
        return await result_text(core, ctx, result)
    if command == "zoom":
        result = await core.outpaint(ctx, args["generation_id"], args["index"], args["op"], progress=progress)
        return await result_text(core, ctx, result)
    if command == "describe":
        described = await core.describe(ctx, args["options"].reference)
        return f"{describe_summary(described)}\nTo draw one: /imagine <prompt>"
    if command == "enhance":
        return enhance_summary(await core.enhance(ctx, args["prompt"]))
    if command == "history":
        return await history_text(core, await core.history(ctx, args["page"]))
    if command == "show":
        return await result_text(core, ctx, await core.show(ctx, args["generation_id"]), again=True)
    if command == "delete":
        await core.delete(ctx, args["generation_id"])
        return (f"Deleted {args['generation_id']} from your history. Its images stay in the bot's store for the "
                "ledger's record until the operator prunes them (imagebot prune).")
    if command == "settings":
        changes: dict[str, str] = args["changes"]
        if not changes:
            return settings_text(await core.server_settings(ctx))
        view = await core.change_settings(ctx, changes)
        return f"Changed {', '.join(changes)}.\n{settings_text(view)}"
    if command == "help":
        return f"{help_text(await core.help(ctx))}\n\nIn this console:\n{HELP}"
    parsed = args["parsed"]
    if parsed.action == "show":
        return credits_summary(await core.credits(ctx.identity))
    if parsed.action == "usage":
        return usage_summary(await core.usage_report(ctx))
    target = Identity(ctx.identity.platform, ctx.identity.server_id, mention_user_id(parsed.target or ""))
    adjusted = await core.admin_adjust(ctx, target, parsed.action, parsed.amount)
    return adjust_summary(adjusted, target.user_id)


async def result_text(core: Imagebot, ctx: Context, result: ImagineResult, *, again: bool = False) -> str:
    """A result as the console prints it: the summary, the saved files, its id and what can follow (the
    chat platforms' buttons, as commands)."""
    paths = "\n".join(f"  {image.path}" for image in result.images)
    gid = result.generation_id
    lines = [imagine_summary(result), f"Saved:\n{paths}", f"generation {gid}"]
    if again:
        lines[0] = f"(shown again, free)\n{lines[0]}"
    which = " [image N]" if len(result.images) > 1 else ""
    ops = await core.outpaint_ops(ctx, gid, 0)
    follow = [f"/edit {gid}{which} <instruction>"]
    if ops:
        follow.append(f"/zoom {gid}{which} {'|'.join(op for op in OPS if op in ops)}")
    follow.append(f"/delete {gid}")
    lines.append("Next: " + " · ".join(follow))
    return "\n".join(lines)


async def history_text(core: Imagebot, page: HistoryPage) -> str:
    """A /history page: one numbered line per result (numbered as on the contact sheet) and the sheet's
    file, saved with the previews (free, and pruned with them)."""
    if not page.items:
        return "You have no results here yet. Make one with /imagine <prompt>."
    lines = [f"Your results here, page {page.page} of {page.pages} ({plural(page.total, 'result')}):"]
    for n, item in enumerate(page.items, 1):
        prompt = item.prompt if len(item.prompt) <= 60 else item.prompt[:57] + "..."
        lines.append(f"  {n}. {item.generation_id} · /{item.command} · {prompt or '-'} · "
                     f"{plural(item.credits, 'credit')} · {plural(len(item.images), 'image')} · {item.age}")
    if page.sheet is not None:
        path, _ = await core.images.save_preview(f"history-page-{page.page}", page.sheet)
        lines.append(f"Contact sheet: {path}")
    lines.append("See one again: /show <id>")
    if page.page < page.pages:
        lines.append(f"More: /history {page.page + 1}")
    return "\n".join(lines)


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

    async def ask(question: str) -> bool:
        print(question, end="", file=out, flush=True)
        answer = await read_abandonable(read)
        return answer.strip().lower() in YES

    print("imagebot local console (offline). Type /help for commands, /quit to leave.", file=out, flush=True)
    try:
        while True:
            print("> ", end="", file=out, flush=True)
            line = await read_abandonable(read)
            if not line or line.strip().lower() in ("/quit", "/exit", "quit", "exit"):
                print("bye", file=out, flush=True)
                return
            reply = await handle_line(core, ctx, line, notify=say, runner=runner, ask=ask)
            if reply:
                say(reply)
    except asyncio.CancelledError:
        say("\n" + stopping_text(runner.busy, grace))
        raise
    finally:
        await runner.close()
