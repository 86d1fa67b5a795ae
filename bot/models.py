"""Platform-neutral values passed between adapters and the core.

An adapter turns a platform event into a ``Context`` plus options, calls the core, and turns the
result values below into platform calls. Nothing here knows about Discord or Slack.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Identity:
    """A user inside one server or workspace: credits and limits never cross servers."""

    platform: str
    server_id: str
    user_id: str

    @property
    def server_key(self) -> str:
        return f"{self.platform}:{self.server_id}"

    def __str__(self) -> str:
        return f"{self.platform}:{self.server_id}:{self.user_id}"


@dataclass(frozen=True)
class Context:
    """Who is asking, where, and whether the platform adapter found them to be an admin."""

    identity: Identity
    channel_id: str = ""
    is_admin: bool = False
    display_name: str = ""
    #: Where a job's outcome goes when another process (or this one after a restart) delivers it: see
    #: ``bot.couriers``. None: only this process can answer (the console); its jobs are not resumable.
    address: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)
    #: Epoch seconds after which the address's short-lived credential (interaction token, response_url) is dead.
    deliver_by: float = 0.0
    #: An age-restricted channel (Discord's nsfw flag): where the server allows it, moderation lets
    #: "sexual" prompts through here (never anything involving minors).
    adult_channel: bool = False

    @property
    def actor(self) -> str:
        return str(self.identity)


@dataclass(frozen=True)
class ImagineOptions:
    """What the user asked for, before validation. ``size`` may be ``WxH`` or an aspect name."""

    prompt: str
    size: str | None = None
    style: str | None = None
    quality: str | None = None
    count: int | str | None = None
    provider: str | None = None
    model: str | None = None
    reference: bytes | None = None
    #: More input images after ``reference`` (a blend).
    references: tuple[bytes, ...] = ()
    #: Input images to fetch when the job runs (chat attachments): the command is acknowledged first.
    reference_urls: tuple[str, ...] = ()
    seed: int | None = None
    #: ``png``, ``webp`` or ``jpeg`` where the model takes it; None: the model's default.
    output_format: str | None = None
    #: ``transparent`` (or ``opaque``/``auto``) where the model takes it.
    background: str | None = None


@dataclass(frozen=True)
class StoredImage:
    sha256: str
    path: Path
    mime: str
    size_bytes: int
    width: int
    height: int


@dataclass
class ImagineResult:
    generation_id: str
    prompt: str
    images: list[StoredImage]
    provider: str
    model: str
    size: str
    style: str
    quality: str
    requested: int
    credits_spent: int
    credits_refunded: int
    balance: int
    revised_prompt: str | None = None
    #: Short notes for the user: fewer images came back than were asked for, an offline sketch...
    partial_note: str | None = None
    #: Providers that were tried and failed before ``provider`` delivered.
    failed_over: list[str] = field(default_factory=list)


@dataclass
class EnhanceResult:
    generation_id: str
    original: str
    enhanced: str
    credits_spent: int
    balance: int
    enhancer: str


@dataclass(frozen=True)
class UsageLine:
    when: float
    command: str
    status: str
    prompt: str
    credits: int
    images: int
    provider: str


@dataclass
class CreditsSummary:
    identity: Identity
    balance: int
    held: int
    spent: int
    images: int
    recent: list[UsageLine]


@dataclass(frozen=True)
class Queued:
    """A command accepted as a job for any worker: reserved, not yet run (``Imagebot.enqueue``)."""

    generation_id: str
    kind: str
    price: int
    balance: int
    #: Jobs queued before this one, across processes.
    ahead: int


@dataclass
class DescribeResult:
    """/describe: prompts a vision model (or the offline describer) suggests for an image."""

    generation_id: str
    prompts: list[str]
    credits_spent: int
    balance: int


@dataclass(frozen=True)
class Quote:
    """A command's price before it runs (``Imagebot.quote``). ``confirm``: above the server's threshold, so
    it was stored as a proposal (``proposal_id``) that runs only when its asker confirms. ``balance`` is read
    only when it matters (above the threshold); 0 otherwise."""

    price: int
    balance: int
    confirm: bool
    proposal_id: str | None = None

    @property
    def balance_after(self) -> int:
        return self.balance - self.price


@dataclass(frozen=True)
class HistoryItem:
    generation_id: str
    command: str
    prompt: str
    credits: int
    created_at: float
    images: list[StoredImage]
    age: str


@dataclass(frozen=True)
class HistoryPage:
    items: list[HistoryItem]
    page: int
    pages: int
    total: int
    #: A PNG contact sheet of the page's first images, numbered like ``items`` (None when empty).
    sheet: bytes | None = None


@dataclass(frozen=True)
class HelpInfo:
    commands: list[tuple[str, str]]
    options: list[tuple[str, str]]
    #: ("1024x1024 medium", credits) for this server.
    prices: list[tuple[str, int]]
    balance: int
    limits: list[str]
    notes: list[str]


@dataclass(frozen=True)
class SettingsView:
    """A server's settings as in effect (text), which of them the server overrides, and recent changes."""

    values: dict[str, str]
    overridden: frozenset[str]
    log: list[dict[str, Any]]
