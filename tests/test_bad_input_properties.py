"""Bad input, by property (hypothesis): prompts, flags, admin amounts, Slack payloads through the real
signed ``/slack/events`` and Discord interactions through the real signed ``/discord/interactions``.

Whatever arrives: a clear answer (or 401/400 at the HTTP edge), never a 5xx, never an exception that
reaches a user (no error logged, no "something went wrong" reply), and never a change of credits that
the input did not ask for (balances and ledger rows read from the SQLite files; every balance equals the
sum of its rows).

The bots run on an event loop of their own in a background thread for the whole module, so each example
is one request and not a new process: hypothesis's examples are plain synchronous calls.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import itertools
import json
import logging
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Coroutine, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import discord.http
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bot.config import MAX_AMOUNT
from bot.core import Imagebot
from bot.discord_app.http_interactions import DiscordInteractions, mount
from bot.errors import ImagebotError, ValidationError
from bot.models import Context, Identity, ImagineOptions
from bot.slack_app.app import SLACK_USER_RE, TEAM_ID_RE
from bot.textcommands import IMAGINE_FLAGS, parse_imagine
from bot.validation import PROMPT_LIMIT, clean_prompt, parse_amount
from bot.web import WebServer
from tests.doubles import ScriptedProvider, make_config, make_core
from tests.fakes.discord_api import GUILD_ID, MANAGE_GUILD, FakeDiscord, Payloads
from tests.fakes.slack_api import action_payload, command_payload
from tests.fakes.slack_harness import SECRET, SlackHarness

T = TypeVar("T")

ANN, BOB, ADA = "U0ANN0001", "U0BOB0001", "U0ADA0001"
DISCORD_MEMBER = 222

PROPERTY = settings(max_examples=60, deadline=None, derandomize=False,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# -- what bad input looks like ------------------------------------------------------------------------------

INVISIBLE = ("\x00", "\x01", "\x07", "\x1b", "\x7f", "\x85", "\x9f", "\u200b", "\u200e", "\u200f", "\u2060",
             "\ufeff", "\u00ad", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068",
             "\u2069", "\u061c", "\U000e0001", "\U000e0041", "\u3164", "\u115f", "\u2800", "\u0301")
NASTY = (
    "'; DROP TABLE accounts; --", "\" OR 1=1 --", "1; UPDATE accounts SET balance = 999999", "../../etc/passwd",
    "..\\..\\windows\\system32", "/dev/zero", "%2e%2e%2f%2e%2e%2f", "file:///etc/shadow", "<@U0ADA0001>", "<!channel>",
    "<!everyone>", "@here", "&lt;script&gt;", "<script>alert(1)</script>", "${jndi:ldap://x/a}", "{{7*7}}", "%s%s%n",
    "null", "None", "[]", "{}", "NaN", "-0", "1e309", "\\u0000", "\u202egnp.exe", "Ｕ０ＡＮＮ０００１",
)
text_junk = st.one_of(
    st.just(""), st.text(max_size=40), st.sampled_from(NASTY),
    st.text(st.sampled_from(INVISIBLE), min_size=1, max_size=8),
    st.text(st.characters(categories=["Cs", "Cc", "Cf", "Zs", "Mn"]), max_size=8),
)
json_junk: st.SearchStrategy[Any] = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), text_junk),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6,
)
prompts = st.one_of(
    st.text(max_size=200),
    st.text(st.characters(codec=None), max_size=200),  # every plane, surrogates included
    st.lists(st.one_of(st.sampled_from(INVISIBLE), st.text(max_size=5)), max_size=30).map("".join),
    st.text(st.sampled_from(INVISIBLE + (" ", "\t", "\n")), max_size=30),
    st.sampled_from(NASTY),
    st.builds(lambda c, n: c * n, st.sampled_from(["x", "狐", "🦊", "\u200b", "a "]),
              st.integers(PROMPT_LIMIT - 2, 100_000)),
)


# -- the bots, on a loop of their own -------------------------------------------------------------------------

class Background:
    """An event loop in a thread: the bots live there across examples; each example waits for its call."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bots", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class Problems(logging.Handler):
    """Errors and tracebacks logged anywhere while examples run: each one is an exception a user met."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.records.append(record)

    def take(self) -> list[str]:
        said = [f"{r.name}: {r.getMessage()}" for r in self.records]
        self.records.clear()
        return said


@pytest.fixture(scope="module")
def bg() -> Iterator[Background]:
    loop = Background()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def problems() -> Iterator[Problems]:
    handler = Problems()
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)


@pytest.fixture(scope="module")
def slack(bg: Background, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlackHarness]:
    harness = bg.run(SlackHarness.start(tmp_path_factory.mktemp("slack"), providers=[ScriptedProvider()]))
    harness.fake.user(ADA, admin=True)
    yield harness
    bg.run(harness.close())


@dataclasses.dataclass
class DiscordBot:
    fake: FakeDiscord
    payloads: Payloads
    key: Ed25519PrivateKey
    database: str
    core: Imagebot
    web: WebServer
    interactions: DiscordInteractions
    session: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web.port}/discord/interactions"

    def signed(self, body: bytes, stamp: int | None = None) -> dict[str, str]:
        text = str(int(time.time()) if stamp is None else stamp)
        return {"X-Signature-Ed25519": self.key.sign(text.encode() + body).hex(), "X-Signature-Timestamp": text,
                "Content-Type": "application/json"}

    async def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        async with self.session.post(self.url, data=body, headers=headers) as resp:
            text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


@pytest.fixture(scope="module")
def discord_bot(bg: Background, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DiscordBot]:
    """The ingress of ``tests/test_discord_http.py`` (role ingress, HTTP interactions only), signed with a key
    pair made here."""
    saved = discord.http.Route.BASE
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    tmp = tmp_path_factory.mktemp("discord")

    async def start() -> DiscordBot:
        fake = await FakeDiscord().start()
        config = make_config(tmp, **fake.env(), DISCORD_PUBLIC_KEY=public, IMAGEBOT_ROLE="ingress")
        core = make_core(config, [ScriptedProvider()])
        await core.start()
        web = WebServer("127.0.0.1", 0)
        interactions = mount(web, core, config)
        assert interactions is not None
        await web.start()
        return DiscordBot(fake, Payloads(fake), key, config.database, core, web, interactions,
                          aiohttp.ClientSession())

    bot = bg.run(start())
    yield bot

    async def stop() -> None:
        await bot.session.close()
        await bot.web.stop()
        await bot.core.close()
        await bot.fake.stop()

    bg.run(stop())
    discord.http.Route.BASE = saved


# -- what the databases say ------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Books:
    balances: dict[tuple[str, str, str], int]
    sums: dict[tuple[str, str, str], int]
    rows: int
    generations: int

    def sound(self) -> None:
        """Every balance equals its rows; none is negative."""
        assert self.balances == {k: v for k, v in self.sums.items() if k in self.balances}, (self.balances, self.sums)
        assert all(v >= 0 for v in self.balances.values())


def books(database: str) -> Books:
    with closing(sqlite3.connect(database)) as conn:
        balances = {(p, s, u): int(b) for p, s, u, b in
                    conn.execute("SELECT platform, server_id, user_id, balance FROM accounts")}
        sums = {(p, s, u): int(d) for p, s, u, d in
                conn.execute("SELECT platform, server_id, user_id, SUM(delta) FROM ledger GROUP BY 1, 2, 3")}
        rows = int(conn.execute("SELECT COUNT(*) FROM ledger").fetchone()[0])
        generations = int(conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0])
    return Books(balances, sums, rows, generations)


def unchanged(before: Books, after: Books) -> None:
    assert (after.balances, after.rows, after.generations) == (before.balances, before.rows, before.generations)


def wire(text: str) -> str:
    """What can travel in an HTTP form or header: lone surrogates (no UTF-8 for them) become ``?``."""
    return text.encode("utf-8", "replace").decode()


_serial = itertools.count(1)


def serial() -> int:
    """A fresh number per request: response_url keys, trigger ids, users (so no body is ever sent twice)."""
    return next(_serial)


# -- prompts -------------------------------------------------------------------------------------------------

@PROPERTY
@given(prompts)
def test_clean_prompt_returns_visible_text_or_refuses(prompt: str) -> None:
    try:
        text = clean_prompt(prompt)
    except ValidationError as exc:
        assert exc.code == "IMG-VALID-PROMPT"
        assert len(exc.message) < 200
        return
    assert text and text == text.strip() and "  " not in text and len(text) <= PROMPT_LIMIT
    text.encode("utf-8")  # no lone surrogate left: it could not be stored or sent
    assert not any(c in text for c in "\x00\x1b\x7f\u200b\u202e\u2066\ufeff")
    assert clean_prompt(text) == text  # cleaning twice changes nothing


@PROPERTY
@given(st.lists(st.text(st.characters(categories=["L", "N", "P", "S"]), min_size=1, max_size=6),
                min_size=1, max_size=8),
       st.lists(st.tuples(st.integers(0, 200), st.sampled_from(
           [c for c in INVISIBLE if c not in "\u3164\u115f\u2800\u0301\u200b\x00\x01\x07\x1b\x7f\x85\x9f"])),
                max_size=6))
def test_invisible_formatting_never_changes_the_visible_prompt(words: list[str], inserts: list[tuple[int, str]]) -> None:
    """Emoji, CJK, accents and RTL letters pass untouched; bidi controls, joiners, BOMs and the like only
    disappear (controls and the zero-width space become a space: they separated words)."""
    visible = " ".join(words)
    dirty = visible
    for at, char in inserts:
        at %= len(dirty) + 1
        dirty = dirty[:at] + char + dirty[at:]
    assert clean_prompt(dirty) == clean_prompt(visible)


@PROPERTY
@given(prompts)
def test_a_prompt_is_charged_only_when_it_is_clean(bg: Background, slack: SlackHarness, problems: Problems,
                                                  prompt: str) -> None:
    """Through the core: refused -> nothing moved; accepted -> charged once, stored as cleaned, images saved
    inside the data directory whatever the prompt says."""
    ctx = Context(Identity("property", "p1", f"user{serial()}"), channel_id="c1")
    before = books(slack.config.database)

    async def run() -> tuple[str | None, str | None]:
        try:
            result = await slack.core.imagine(ctx, ImagineOptions(prompt=prompt, size="256x256"))
        except ImagebotError as exc:
            return None, exc.code
        return result.prompt, None

    stored, code = bg.run(run())
    after = books(slack.config.database)
    after.sound()
    try:
        expected = clean_prompt(prompt)
    except ValidationError:
        assert code == "IMG-VALID-PROMPT"
        unchanged(before, after)
    else:
        assert stored == expected
        assert after.generations == before.generations + 1
        assert after.balances[("property", "p1", ctx.identity.user_id)] < 50
    data = Path(slack.config.data_dir).resolve()
    assert all(p.resolve().is_relative_to(data) for p in data.rglob("*"))
    assert problems.take() == []


# -- flags ---------------------------------------------------------------------------------------------------

flag_names = st.one_of(st.sampled_from(IMAGINE_FLAGS + ("ar", "bg", "output_format", "sise", "SIZE", "")),
                       st.text(max_size=10))
flag_tokens = st.one_of(
    st.builds(lambda dash, name: f"{dash}{name}", st.sampled_from(["--", "\u2014", "\u2013", "-", "---"]), flag_names),
    st.builds(lambda name, value: f"--{name}={value}", flag_names, text_junk),
    st.sampled_from(["-s", "-n", "-q", "-p", "-a", "-f", "--", "—", "-"]),
    st.sampled_from(["16:9", "1024x1024", "999999x1", "0", "-1", "10", "11", "1e3", "hd", "max", "png", "jpg",
                     "transparent", "local", "local/nope", "１０", "٣"]),
    text_junk, st.sampled_from(NASTY),
)


@PROPERTY
@given(st.lists(flag_tokens, max_size=12))
def test_flag_parsing_answers_with_options_or_a_named_flag_error(bg: Background, slack: SlackHarness,
                                                                  tokens: list[str]) -> None:
    """Console and Slack text: options, or an IMG-VALID-FLAG error; then the core's plan accepts them or
    refuses with its own code, never anything else."""
    text = " ".join(tokens)
    try:
        options = parse_imagine(text)
    except ValidationError as exc:
        assert exc.code == "IMG-VALID-FLAG" and len(exc.message) < 1000
        return
    ctx = Context(Identity("property", "p1", "flags"), channel_id="c1")

    async def plan() -> str:
        try:
            return f"plan {slack.core.plan(ctx, options).total}"
        except ImagebotError as exc:
            return exc.code

    outcome = bg.run(plan())
    assert outcome.startswith(("plan ", "IMG-VALID-")), outcome


@PROPERTY
@given(st.lists(st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=8), min_size=1, max_size=5),
       st.dictionaries(st.sampled_from(["size", "style", "quality", "count", "provider", "seed", "format"]),
                       st.text(st.characters(categories=["L", "N"], include_characters=":x/"), min_size=1,
                               max_size=10), max_size=4),
       st.booleans())
def test_flags_round_trip(words: list[str], flags: dict[str, str], equals: bool) -> None:
    """Every flag given, as ``--k v`` or ``--k=v``, comes back with its value; the rest is the prompt."""
    if "seed" in flags:
        flags["seed"] = str(sum(map(ord, flags["seed"])))
    text = " ".join(words) + "".join(f" --{k}={v}" if equals else f" --{k} {v}" for k, v in flags.items())
    words = [w for w in words if w not in ("-s", "-n", "-q", "-p", "-a", "-f")]
    options = parse_imagine(text)
    assert options.prompt == " ".join(words)
    fields = {"size": options.size, "style": options.style, "quality": options.quality, "count": options.count,
              "provider": options.provider, "seed": None if options.seed is None else str(options.seed),
              "format": options.output_format}
    assert {k: fields[k] for k in flags} == flags


# -- admin amounts -------------------------------------------------------------------------------------------

def formatted(n: int) -> st.SearchStrategy[str]:
    return st.sampled_from([str(n), f"{n:,}", f"{n:_}", f"+{n}", f" {n} ", str(n).translate(
        {ord(d): 0xFF10 + int(d) for d in "0123456789"})])


locale_formatted = st.integers(0, 10**12).flatmap(lambda n: st.sampled_from([
    f"{n:,}".replace(",", "."), f"{n:,}".replace(",", " "), f"{n:,}".replace(",", "\u202f"),
    f"{n:,}".replace(",", "'"), f"{n / 100:.2f}", f"{n / 100:,.2f}".replace(",", "X").replace(".", ",").replace(
        "X", "."), f"-{n}", f"{n}e2", f"{n}.0", f"{n},{n % 100:02d}" if n < 1000 else f"{n}."]))
amounts = st.one_of(
    st.integers(-10**30, 10**30).flatmap(formatted),
    st.integers(0, MAX_AMOUNT + 10).flatmap(formatted),
    locale_formatted,
    st.floats(allow_nan=True).map(str),
    text_junk,
    st.sampled_from(["1,5", "2,50", "1,0000", "01,000", "1.5", "-3", "1e3", "０１", "5²", "½", "٣", "1__000"]),
)


@PROPERTY
@given(st.one_of(amounts, st.integers(-10**20, 10**20), st.floats(), st.booleans(), st.none(), json_junk),
       st.booleans())
def test_an_amount_is_a_whole_number_in_range_or_refused(value: object, allow_zero: bool) -> None:
    try:
        number = parse_amount(value, allow_zero=allow_zero)
    except ValidationError as exc:
        assert exc.code == "IMG-VALID-AMOUNT" and len(exc.message) < 300
        if isinstance(value, int) and not isinstance(value, bool):
            assert not (0 if allow_zero else 1) <= value <= MAX_AMOUNT
        return
    assert isinstance(number, int) and (0 if allow_zero else 1) <= number <= MAX_AMOUNT
    assert not isinstance(value, bool | float)
    if isinstance(value, str):
        plain = value.strip().translate({0xFF10 + i: ord("0") + i for i in range(10)} | {0xFF0C: 44, 0xFF0B: 43})
        assert not any(c in plain for c in ".-eE' \u202f"), value  # no decimals, signs, exponents, spaces
        assert int(plain.replace(",", "").replace("_", "")) == number
        for group in plain.lstrip("+").replace("_", ",").split(",")[1:]:
            assert len(group) == 3, value  # thousands in threes only: 1,5 and 2,50 never pass


@PROPERTY
@given(st.integers(0, MAX_AMOUNT).flatmap(lambda n: st.tuples(st.just(n), formatted(n))), st.booleans())
def test_every_way_of_writing_a_valid_amount_reads_the_same(case: tuple[int, str], allow_zero: bool) -> None:
    number, text = case
    if number == 0 and not allow_zero:
        with pytest.raises(ValidationError):
            parse_amount(text)
    else:
        assert parse_amount(text, allow_zero=allow_zero) == number


@PROPERTY
@given(st.sampled_from(["grant", "revoke", "set"]),
       amounts.map(lambda a: wire(a)).filter(lambda a: len(a.split()) == 1 and a.strip() == a))
def test_slack_admin_amounts_move_exactly_what_was_asked(bg: Background, slack: SlackHarness, problems: Problems,
                                                         action: str, amount: str) -> None:
    """``/credits grant|revoke|set @bob AMOUNT`` by a workspace admin: the balance moves as the amount says
    when it is unambiguous, else not at all, and the admin is told either way."""
    key = f"amount{serial()}"
    target = Identity("slack", slack.fake.team_id, BOB)
    before = bg.run(slack.balance(BOB))
    try:
        n: int | None = parse_amount(amount, allow_zero=action == "set")
    except ValidationError:
        n = None
    if n is None or (action == "revoke" and n > before):
        expected = before  # refused: ambiguous, out of range, or more than there is
    else:
        expected = {"grant": before + n, "set": n, "revoke": before - n}[action]

    async def run() -> str:
        await slack.command("/credits", f"{action} <@{BOB}|bob> {amount}", user=ADA, key=key)
        await slack.fake.until(lambda: slack.fake.replies(key))
        await slack.idle()
        return slack.fake.replies(key)[-1]

    reply = bg.run(run())
    after = bg.run(slack.core.store.balance(target))
    assert after == expected, (action, amount, reply)
    if n is None:
        assert "(IMG-VALID-AMOUNT)" in reply, reply
    else:
        assert "(IMG-" in reply or f"{after}" in reply or f"{after:,}" in reply, reply
    books(slack.config.database).sound()
    assert problems.take() == []


# -- Slack, through the real signed endpoint -----------------------------------------------------------------

def slack_signed(body: str, *, secret: str = SECRET, stamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if stamp is None else stamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}",
            "Content-Type": "application/x-www-form-urlencoded"}


#: Ways a request is not one Slack signed just now, each a function of (body, headers) -> (body, headers).
HEADER_DAMAGE: dict[str, Any] = {
    "unsigned": lambda b, h, j: (b, {"Content-Type": h["Content-Type"]}),
    "no timestamp": lambda b, h, j: (b, {k: v for k, v in h.items() if k != "X-Slack-Request-Timestamp"}),
    "no signature": lambda b, h, j: (b, {k: v for k, v in h.items() if k != "X-Slack-Signature"}),
    "timestamp junk": lambda b, h, j: (b, h | {"X-Slack-Request-Timestamp": j}),
    "signature junk": lambda b, h, j: (b, h | {"X-Slack-Signature": j}),
    "signature v1": lambda b, h, j: (b, h | {"X-Slack-Signature": "v1=" + h["X-Slack-Signature"][3:]}),
    "signature upper": lambda b, h, j: (b, h | {"X-Slack-Signature": h["X-Slack-Signature"].upper()}),
    "wrong secret": lambda b, h, j: (b, slack_signed(b, secret="not-the-secret")),
    "stale": lambda b, h, j: (b, slack_signed(b, stamp=int(time.time()) - 301 - len(j) * 1000)),
    "future": lambda b, h, j: (b, slack_signed(b, stamp=int(time.time()) + 301 + len(j) * 1000)),
    "far future": lambda b, h, j: (b, slack_signed(b, stamp=10**12 - 1)),
    "tampered": lambda b, h, j: (b + "&x=" + urllib.parse.quote(j or "1"), h),
    "signed then json": lambda b, h, j: (b, h | {"Content-Type": "application/json"}),
}


@PROPERTY
@given(st.sampled_from(sorted(HEADER_DAMAGE)), text_junk.map(wire),
       st.sampled_from(["/imagine a red fox --size 256x256", "/credits", f"/credits set <@{BOB}|bob> 999999"]),
       st.booleans())
def test_slack_requests_not_signed_just_now_get_401_or_400_and_change_nothing(
        bg: Background, slack: SlackHarness, problems: Problems, damage: str, junk: str, command: str,
        replay: bool) -> None:
    name, _, text = command.partition(" ")
    payload = command_payload(slack.fake, name, text, user=ADA, key=f"edge{serial()}")
    payload["trigger_id"] = str(serial())
    body = urllib.parse.urlencode(payload)
    before = books(slack.config.database)
    calls = len(slack.fake.calls)
    if replay:  # the genuine request first (answered), then the same bytes again: a replay
        headers = slack_signed(body)
        assert bg.run(slack.post(body, headers))[0] == 200
        bg.run(slack.idle())
        before, calls = books(slack.config.database), len(slack.fake.calls)
        sent, sent_headers = body, headers
    else:
        sent, sent_headers = HEADER_DAMAGE[damage](body, slack_signed(body), junk)
    try:
        status, _, _ = bg.run(slack.post(sent, sent_headers))
    except (ValueError, aiohttp.ClientError):
        return  # a header value the HTTP client itself will not send (a newline): nothing reached the bot
    assert status in (400, 401), (damage, replay, status)
    bg.run(slack.idle())
    unchanged(before, books(slack.config.database))
    assert len(slack.fake.calls) == calls  # not even users.info or auth.test
    assert problems.take() == []


def slack_ids_ok(team: object, user: object) -> bool:
    return (isinstance(team, str) and TEAM_ID_RE.fullmatch(team) is not None
            and isinstance(user, str) and SLACK_USER_RE.fullmatch(user) is not None)


field_change = st.one_of(st.just(("keep", None)), st.just(("keep", None)), st.just(("keep", None)),
                         st.just(("drop", None)), st.tuples(st.just("set"), text_junk))


@PROPERTY
@given(st.sampled_from(["/imagine", "/enhance", "/credits"]), st.one_of(text_junk, st.sampled_from([
           "a fox --size 256x256", "a fox --count 99", "grant <@U0BOB0001|bob> 1,5", "usage 9999", "set bob 5"])),
       st.fixed_dictionaries({k: field_change for k in (
           "user_id", "team_id", "enterprise_id", "channel_id", "user_name", "response_url", "thread_ts")}),
       st.dictionaries(st.text(max_size=8), text_junk, max_size=3))
def test_slack_commands_with_missing_or_mistyped_fields_are_answered(
        bg: Background, slack: SlackHarness, problems: Problems, command: str, text: str,
        changes: dict[str, tuple[str, str | None]], extra: dict[str, str]) -> None:
    """Signed, so Bolt runs them: without a valid user and workspace id nothing runs (IMG-SLACK-IDENTITY);
    with them the command is answered (ack text, or a reply after an empty ack), the books stay sound."""
    payload: dict[str, str] = {**{k: v for k, v in extra.items() if k not in ("payload", "command")},
                               **command_payload(slack.fake, command, text, user=ANN, key=f"cmd{serial()}")}
    for name, (how, value) in changes.items():
        if how == "drop":
            payload.pop(name, None)
        elif how == "set" and value is not None:
            payload[name] = value
    payload["trigger_id"] = str(serial())
    payload = {wire(k): wire(v) for k, v in payload.items()}
    body = urllib.parse.urlencode(payload)
    before = books(slack.config.database)
    status, reply, _ = bg.run(slack.post(body, slack_signed(body)))
    assert status == 200, (status, reply)
    event(f"{command}: identity {'ok' if slack_ids_ok(payload.get('team_id') or payload.get('enterprise_id'), payload.get('user_id')) else 'refused'}")
    bg.run(slack.idle())
    after = books(slack.config.database)
    after.sound()
    if not slack_ids_ok(payload.get("team_id") or payload.get("enterprise_id"), payload.get("user_id")):
        assert "IMG-SLACK-IDENTITY" in json.loads(reply)["text"]
        unchanged(before, after)
    elif reply:
        assert json.loads(reply)["response_type"] == "ephemeral"
    assert problems.take() == []


def damage_action(payload: dict[str, Any], what: str, junk: Any) -> None:
    if what == "user":
        payload["user"] = junk
    elif what == "user.id":
        payload["user"]["id"] = junk
    elif what == "team":
        payload["team"] = junk
        payload["user"].pop("team_id", None)
    elif what == "team.id":
        payload["team"]["id"] = junk
        payload["user"].pop("team_id", None)
    elif what == "actions":
        payload["actions"] = junk
    elif what == "action":
        payload["actions"] = [junk]
    elif what == "value":
        payload["actions"][0]["value"] = junk
    elif what == "action_id":
        payload["actions"][0]["action_id"] = junk
    elif what == "type":
        payload["type"] = junk
    elif what in ("channel", "container", "message", "response_url", "enterprise"):
        payload[what] = junk
    elif what == "drop":
        payload.pop(str(junk), None)


@PROPERTY
@given(st.sampled_from(["imagebot:reroll", "imagebot:variations:0", "imagebot:enhance", "imagebot:imagine_this"]),
       st.lists(st.tuples(st.sampled_from(["user", "user.id", "team", "team.id", "actions", "action", "value",
                                           "action_id", "type", "channel", "container", "message",
                                           "response_url", "enterprise", "drop"]), json_junk),
                min_size=1, max_size=3),
       st.booleans())
def test_slack_buttons_with_missing_or_mistyped_fields_are_answered(
        bg: Background, slack: SlackHarness, problems: Problems, action_id: str,
        damages: list[tuple[str, Any]], real_generation: bool) -> None:
    """Interactivity payloads, signed: 200 (acked; the presser told by response_url) or 400/404 for what is
    not a Slack payload or a button of this bot; a press without valid ids runs nothing."""
    from bot.slack_app import blocks

    ids = {"imagebot:reroll": blocks.REROLL, "imagebot:enhance": blocks.ENHANCE,
           "imagebot:imagine_this": blocks.IMAGINE_THIS, "imagebot:variations:0": f"{blocks.VARIATIONS}_0"}
    value = "0" * 32
    if real_generation:
        gens = bg.run(slack.core.store.recent_generations(Identity("slack", slack.fake.team_id, ANN), 1))
        value = gens[0].id if gens else value
    payload = action_payload(slack.fake, ids.get(action_id, action_id), value, user=ANN, key=f"btn{serial()}")
    payload["trigger_id"] = str(serial())
    for what, junk in damages:
        try:
            damage_action(payload, what, junk)
        except (TypeError, KeyError, IndexError, AttributeError):
            pass  # an earlier damage left nothing of that shape to damage
    body = urllib.parse.urlencode({"payload": json.dumps(payload)})
    before = books(slack.config.database)
    status, _, _ = bg.run(slack.post(body, slack_signed(body)))
    assert status in (200, 400, 404), status
    event(f"button: {status}")
    bg.run(slack.idle())
    after = books(slack.config.database)
    after.sound()
    user = payload.get("user") if isinstance(payload, dict) else None
    team = payload.get("team")
    team_id = (team.get("id") if isinstance(team, dict) else None) or (
        user.get("team_id") if isinstance(user, dict) else None)
    enterprise = payload.get("enterprise")
    team_id = team_id or (enterprise.get("id") if isinstance(enterprise, dict) else None)
    if not slack_ids_ok(team_id, user.get("id") if isinstance(user, dict) else None):
        unchanged(before, after)
    assert problems.take() == []


# -- Discord, through the real signed endpoint ----------------------------------------------------------------

def discord_base(bot: DiscordBot, kind: str, prompt: str) -> dict[str, Any]:
    p = bot.payloads
    if kind == "imagine":
        return p.command("imagine", [p.opt("prompt", prompt)])
    if kind == "enhance":
        return p.command("enhance", [p.opt("prompt", prompt)])
    if kind == "credits":
        return p.command("credits")
    if kind == "admin":
        return p.command("credits-admin", [p.sub("grant", [p.opt("member", str(DISCORD_MEMBER), 6),
                                                            p.opt("amount", 5, 4)])],
                         permissions=MANAGE_GUILD, resolved=p.member_resolved(DISCORD_MEMBER))
    return p.click({"id": str(p.fake.new_id()), "channel_id": "1"}, f"ib:rr:{'0' * 32}")


def damage_interaction(payload: dict[str, Any], what: str, junk: Any) -> None:
    if what == "member":
        payload["member"] = junk
    elif what == "member.user":
        payload["member"]["user"] = junk
    elif what == "user.id":
        payload["member"]["user"]["id"] = junk
    elif what == "permissions":
        payload["member"]["permissions"] = junk
    elif what == "roles":
        payload["member"]["roles"] = junk
    elif what in ("guild_id", "channel_id", "channel", "id", "token", "type", "data", "application_id",
                  "attachment_size_limit"):
        payload[what] = junk
    elif what == "data.name":
        payload["data"]["name"] = junk
    elif what == "options":
        payload["data"]["options"] = junk
    elif what == "option":
        payload["data"]["options"] = [junk]
    elif what == "option.value":
        payload["data"]["options"][0]["value"] = junk
    elif what == "sub.options":
        payload["data"]["options"][0]["options"] = junk
    elif what == "amount":
        payload["data"]["options"][0]["options"][1]["value"] = junk
    elif what == "custom_id":
        payload["data"]["custom_id"] = junk
    elif what == "resolved":
        payload["data"]["resolved"] = junk


DISCORD_DAMAGE = ["member", "member.user", "user.id", "permissions", "roles", "guild_id", "channel_id", "channel",
                  "id", "token", "type", "data", "application_id", "attachment_size_limit", "data.name", "options",
                  "option", "option.value", "sub.options", "amount", "custom_id", "resolved"]


def discord_identity(payload: dict[str, Any]) -> bool:
    member = payload.get("member")
    user = (member.get("user") if isinstance(member, dict) else None) or payload.get("user")
    return isinstance(user, dict) and bool(user.get("id"))


@PROPERTY
@given(st.sampled_from(["imagine", "enhance", "credits", "admin", "button"]), prompts,
       st.lists(st.tuples(st.sampled_from(DISCORD_DAMAGE), json_junk), max_size=3))
def test_discord_interactions_with_missing_or_mistyped_data_are_answered(
        bg: Background, discord_bot: DiscordBot, problems: Problems, kind: str, prompt: str,
        damages: list[tuple[str, Any]]) -> None:
    """Signed interactions: 200 with an interaction response, or 400/401; never a 5xx or the internal-error
    reply; a refusal in the response changes no credit; the books stay sound whatever was queued."""
    payload = discord_base(discord_bot, kind, prompt)
    for what, junk in damages:
        try:
            damage_interaction(payload, what, junk)
        except (TypeError, KeyError, IndexError, AttributeError):
            pass
    body = json.dumps(payload).encode()
    before = books(discord_bot.database)
    status, answer = bg.run(discord_bot.post(body, discord_bot.signed(body)))
    bg.run(discord_bot.interactions.idle())
    after = books(discord_bot.database)
    after.sound()
    assert status in (200, 400, 401), (status, answer)
    event(f"{kind}: {status} {answer.get('type') if isinstance(answer, dict) else ''}")
    if status == 200:
        assert isinstance(answer, dict) and answer.get("type") in (1, 4, 5, 8), answer
        content = str((answer.get("data") or {}).get("content") or "")
        assert "IMG-INTERNAL" not in content and "went wrong" not in content.lower(), content
    if status != 200 or answer.get("type") == 4:
        unchanged(before, after)
    if not discord_identity(payload):
        unchanged(before, after)
    assert problems.take() == []


@PROPERTY
@given(json_junk, st.one_of(st.integers(-10**20, 10**20), st.integers(-3, 3000)), st.booleans())
def test_discord_admin_amounts_move_exactly_what_was_asked(
        bg: Background, discord_bot: DiscordBot, problems: Problems, junk: Any, number: int, use_number: bool) -> None:
    """``/credits-admin grant`` with the amount as Discord's JSON may carry it: only a whole number in
    range (not a bool, a float or a string) moves credits, by exactly that much."""
    amount = number if use_number else junk
    payload = discord_base(discord_bot, "admin", "")
    payload["data"]["options"][0]["options"][1]["value"] = amount
    target = Identity("discord", str(GUILD_ID), str(DISCORD_MEMBER))
    before = bg.run(discord_bot.core.store.balance(target))
    body = json.dumps(payload).encode()
    status, answer = bg.run(discord_bot.post(body, discord_bot.signed(body)))
    bg.run(discord_bot.interactions.idle())
    after = bg.run(discord_bot.core.store.balance(target))
    assert status == 200 and answer["type"] in (4, 5), answer
    valid = type(amount) is int and 1 <= amount <= MAX_AMOUNT
    assert after == (before + amount if valid else before), (amount, answer)
    books(discord_bot.database).sound()
    assert problems.take() == []


DISCORD_HEADER_DAMAGE: dict[str, Any] = {
    "unsigned": lambda bot, b, j: (b, {"Content-Type": "application/json"}),
    "no timestamp": lambda bot, b, j: (b, {k: v for k, v in bot.signed(b).items() if k != "X-Signature-Timestamp"}),
    "timestamp junk": lambda bot, b, j: (b, bot.signed(b) | {"X-Signature-Timestamp": j}),
    "signature junk": lambda bot, b, j: (b, bot.signed(b) | {"X-Signature-Ed25519": j}),
    "other key": lambda bot, b, j: (b, {"X-Signature-Ed25519": Ed25519PrivateKey.generate().sign(
        str(int(time.time())).encode() + b).hex(), "X-Signature-Timestamp": str(int(time.time()))}),
    "stale": lambda bot, b, j: (b, bot.signed(b, int(time.time()) - 301 - len(j) * 1000)),
    "future": lambda bot, b, j: (b, bot.signed(b, int(time.time()) + 301 + len(j) * 1000)),
    "tampered": lambda bot, b, j: (b + b" ", bot.signed(b)),
}


@PROPERTY
@given(st.sampled_from(sorted(DISCORD_HEADER_DAMAGE)), text_junk.map(wire), st.sampled_from(["imagine", "admin", "credits"]),
       st.booleans())
def test_discord_requests_not_signed_just_now_get_401_and_change_nothing(
        bg: Background, discord_bot: DiscordBot, problems: Problems, damage: str, junk: str, kind: str,
        replay: bool) -> None:
    """Unsigned, badly signed, stale, future, tampered or replayed: 401, and nothing moves."""
    body = json.dumps(discord_base(discord_bot, kind, "a fox")).encode()
    if replay:  # the genuine request first (answered), then the same bytes again
        headers = discord_bot.signed(body)
        assert bg.run(discord_bot.post(body, headers))[0] == 200
        bg.run(discord_bot.interactions.idle())
        sent = body
    before = books(discord_bot.database)
    if not replay:
        sent, headers = DISCORD_HEADER_DAMAGE[damage](discord_bot, body, junk)
    try:
        status, _ = bg.run(discord_bot.post(sent, headers))
    except (ValueError, aiohttp.ClientError):
        return  # a header the HTTP client will not send
    assert status == 401, (damage, replay, status)
    bg.run(discord_bot.interactions.idle())
    unchanged(before, books(discord_bot.database))
    assert problems.take() == []
