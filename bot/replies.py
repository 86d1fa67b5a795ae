"""Reply text shared by every adapter, so Discord, Slack and the console say the same things."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from storage.ledger import (
    AboveMaxBalance,
    DuplicateRequest,
    LedgerRefused,
    RevokeAboveBalance,
    ShortBalance,
    TooManyJobs,
)

from .errors import ImagebotError, InsufficientCredits, RateLimited, StorageError, UserError, ValidationError
from .models import CreditsSummary, DescribeResult, EnhanceResult, HelpInfo, ImagineResult, SettingsView

if TYPE_CHECKING:  # the core imports this module (through billing); only the type is needed here
    from .core import AdjustResult


def plural(n: int, word: str) -> str:
    """``1 credit``, ``2 credits``: every count a person reads goes through here."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def refund_note(refunded: int) -> str:
    """After a sentence about a result that reached no one: where the credits went (leading space)."""
    if not refunded:
        return " You were not charged."
    return f" Your {plural(refunded, 'credit')} {'was' if refunded == 1 else 'were'} refunded."


def returned_note(refunded: int) -> str:
    """After the reason a charged job failed: that nothing was charged, and what came back (leading space)."""
    return f" You were not charged ({plural(refunded, 'credit')} returned)." if refunded else " You were not charged."


def undelivered_text(refunded: int) -> str:
    """Every place refused the result (channel, DM...) and ``refunded`` credits went back."""
    return f"I couldn't deliver the result.{refund_note(refunded)} (IMG-DELIVERY-001)"


def imagine_summary(result: ImagineResult, who: str = "") -> str:
    lines = [f"{who + ': ' if who else ''}{result.prompt}"]
    if result.revised_prompt and result.revised_prompt != result.prompt:
        lines.append(f"Revised prompt: {result.revised_prompt}")
    lines.append(
        f"{plural(len(result.images), 'image')} · {result.provider} ({result.model}) · {result.size}"
        f" · {result.style} · {result.quality}"
    )
    lines.append(f"{plural(result.credits_spent, 'credit')} spent · {result.balance} left")
    if result.failed_over:
        lines.append(f"{', '.join(result.failed_over)} failed; {result.provider} delivered instead.")
    if result.partial_note:
        lines.append(result.partial_note)
    return "\n".join(lines)


def enhance_summary(result: EnhanceResult) -> str:
    return (
        f"Enhanced prompt:\n{result.enhanced}\n"
        f"{plural(result.credits_spent, 'credit')} spent · {result.balance} left"
    )


def credits_summary(summary: CreditsSummary) -> str:
    lines = [f"Balance: {plural(summary.balance, 'credit')}"]
    if summary.held:
        lines[0] += f" ({summary.held} held for jobs in progress)"
    lines.append(f"Spent so far: {plural(summary.spent, 'credit')} on {plural(summary.images, 'image')}")
    if summary.recent:
        lines.append("Recent:")
        for u in summary.recent:
            when = dt.datetime.fromtimestamp(u.when, dt.UTC).strftime("%Y-%m-%d %H:%M")
            prompt = u.prompt if len(u.prompt) <= 60 else u.prompt[:57] + "..."
            lines.append(f"• {when} /{u.command} {u.status.lower()} · {u.credits} cr · {prompt}")
    return "\n".join(lines)


def adjust_summary(result: AdjustResult, target_label: str) -> str:
    verb = {"grant": "Granted", "revoke": "Revoked", "set": "Set"}[result.kind]
    if result.kind == "set":
        return f"Set {target_label}'s balance to {result.new_balance} (was {result.old_balance})."
    prep = "to" if result.kind == "grant" else "from"
    return f"{verb} {plural(result.amount, 'credit')} {prep} {target_label}: balance {result.old_balance} -> {result.new_balance}."


def usage_summary(rows: list[dict[str, object]]) -> str:
    if not rows:
        return "No usage in this period."
    lines = ["user · provider · status: requests, images, credits"]
    for r in rows:
        lines.append(
            f"{r['user_id']} · {r['provider'] or '-'} · {str(r['status']).lower()}: "
            f"{r['requests']}, {r['images']}, {r['credits']}"
        )
    return "\n".join(lines)


def refusal(exc: LedgerRefused) -> ImagebotError:
    """The user error, in words, for a movement the ledger refused (the ledger gives only numbers)."""
    if isinstance(exc, ShortBalance):
        return InsufficientCredits(
            f"This needs {plural(exc.needed, 'credit')} and you have {exc.balance}. Ask a server admin for more.",
            balance=exc.balance, needed=exc.needed,
        )
    if isinstance(exc, TooManyJobs):
        return RateLimited(
            f"You already have {plural(exc.running, 'job')} running (the limit is {exc.limit}). "
            "Wait for one to finish.",
            retry_after=5.0, code=exc.code,
        )
    if isinstance(exc, RevokeAboveBalance):
        return ValidationError(
            f"Cannot revoke {plural(exc.amount, 'credit')}: the balance is only {exc.balance}. Nothing was changed.",
            code=exc.code,
        )
    if isinstance(exc, AboveMaxBalance):
        return ValidationError(
            f"That would take the balance above {exc.maximum:,} credits (it is {exc.balance:,}). "
            "Nothing was changed.",
            code=exc.code,
        )
    if isinstance(exc, DuplicateRequest):
        return StorageError("That request was already started. Nothing was changed.", code=exc.code)
    return UserError("The ledger refused that. Nothing was changed.", code=exc.code)


def interrupted_text(refunded: int | None) -> str:
    """A job cut short because the bot is shutting down. ``refunded`` None: before its result existed
    (the reservation went back whole); a number: while it was being posted."""
    if refunded is None:
        return ("The bot was restarted before your request finished; you were not charged. "
                "Please run it again in a minute. (IMG-CANCELLED)")
    back = f"{plural(refunded, 'credit')} refunded" if refunded else "you were not charged"
    return ("The bot was restarted while posting your result, so it may not have arrived; "
            f"{back}. Please run it again in a minute. (IMG-DELIVERY-CANCELLED)")


def broken_delivery_text(refunded: int) -> str:
    """A bug while posting a result that was already paid for: the credits went back."""
    return (f"Something went wrong on the bot's side while posting your result; {plural(refunded, 'credit')} "
            "refunded. (IMG-INTERNAL-001)")


def restarting_text() -> str:
    """A command that arrived while the bot is shutting down (it takes no new jobs then)."""
    return "The bot is restarting and took no new work; nothing was charged. Please try again in a minute. " \
        "(IMG-RESTARTING)"


def error_text(error: ImagebotError) -> str:
    text = f"{error.message} ({error.code})"
    if isinstance(error, RateLimited) and "Try again" not in error.message:
        text += f" Try again in {error.retry_after:.0f} s."
    return text


#: /help: (usage, what it does), the same on every platform.
HELP_COMMANDS: tuple[tuple[str, str], ...] = (
    ("/imagine <prompt> [options]", "images from a prompt; up to 4 reference images blend (Discord attachments)"),
    ("/enhance <prompt>", "a richer prompt from the text model, with an Imagine button"),
    ("/describe <image>", "four prompts suggested for an image, each with an Imagine button"),
    ("/history [page]", "your results in this server, ten at a time"),
    ("/show <id>", "one result again with its buttons (ids are in every result's footer)"),
    ("/credits", "your balance and recent usage; admins grant, revoke and set"),
    ("/settings [key value]", "this server's settings (admins change them)"),
    ("/help", "this text"),
    ("Buttons", "Re-roll, Variations, Upscale, Edit, Zoom out, Pan, Make square, Delete"),
)
HELP_OPTIONS: tuple[tuple[str, str], ...] = (
    ("size", "WxH, a ratio such as 16:9, or square/landscape/portrait"),
    ("count", "how many images (1 to the server's most)"),
    ("quality", "low, medium, high or max, where the model has them"),
    ("style", "natural, vivid, artistic or photographic"),
    ("provider / model", "a configured provider, and one of its models"),
    ("format / background", "png, webp or jpeg; transparent where the model can"),
    ("seed", "the same seed and prompt draw the same offline sketch"),
)


def help_text(info: HelpInfo) -> str:
    lines = ["Commands:"] + [f"  {usage} — {what}" for usage, what in info.commands]
    lines += ["Options of /imagine:"] + [f"  {name}: {what}" for name, what in info.options]
    lines += ["Prices here (credits per image):"] + [f"  {label}: {plural(n, 'credit')}" for label, n in info.prices]
    lines += ["Limits:"] + [f"  {limit}" for limit in info.limits]
    lines += [note for note in info.notes if note]
    lines.append(f"Your balance: {plural(info.balance, 'credit')}.")
    return "\n".join(lines)


def settings_text(view: SettingsView) -> str:
    lines = ["Settings of this server (* set here; the rest are the bot's defaults):"]
    lines += [f"  {'*' if key in view.overridden else ' '} {key}: {value}" for key, value in view.values.items()]
    if view.log:
        lines.append("Recent changes:")
        for change in view.log[:5]:
            when = dt.datetime.fromtimestamp(float(change["created_at"]), dt.UTC).strftime("%Y-%m-%d %H:%M")
            lines.append(f"  {when} {change['key']}: {_setting(change['old'])} -> {_setting(change['new'])} "
                         f"by {change['actor']}")
    lines.append("Change one: /settings <key> <value> (the value 'default' goes back to the bot's default).")
    return "\n".join(lines)


def _setting(value: object) -> str:
    """A stored setting as an admin typed it: ``default`` for none, lists comma-separated, 2.0 as 2."""
    if value is None:
        return "default"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def age_text(seconds: float) -> str:
    """How long ago, as people say it: 'just now', '5 min ago', '3 h ago', '12 days ago'."""
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    return f"{plural(int(seconds // 86400), 'day')} ago"


def describe_summary(result: DescribeResult) -> str:
    lines = ["Suggested prompts:"] + [f"  {n}. {p}" for n, p in enumerate(result.prompts, 1)]
    lines.append(f"{plural(result.credits_spent, 'credit')} spent, {plural(result.balance, 'credit')} left.")
    return "\n".join(lines)
