"""Moderation and the blocklist, through the real openai SDK against the loopback fake of /v1/moderations.

What a user notices: a flagged prompt is refused naming its category in plain words and costs nothing; a
clean one goes through; "sexual" passes only in an age-restricted channel of a server that allows it,
anything involving minors never; input images go to the model as data URLs, one per request; a blocked
word is named; a moderation model that cannot be asked refuses (fail closed); the key never shows. What an
admin notices: a bad blocklist entry is refused naming it, and no pattern can stall the bot."""

from __future__ import annotations

import base64
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest

from bot.app import build_core
from bot.config import load_config
from bot.core import Imagebot
from bot.errors import ConfigError, ValidationError
from bot.models import ImagineOptions
from bot.moderation import (
    LIST_BUDGET,
    PATTERN_BUDGET,
    Moderation,
    blocked,
    compile_blocklist,
    parse_blocklist,
)
from providers.moderation import MODEL, Moderator, OpenAIModerator, build_moderator
from tests.doubles import tiny_png
from tests.fakes.harness import CTX, FAST, OPENAI_KEY, USER, make_config, openai_env
from tests.fakes.openai_api import FakeOpenAI

ADDRESS = {"platform": "test"}


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def core(tmp_path: Path, fake: FakeOpenAI) -> AsyncIterator[Imagebot]:
    bot = build_core(make_config(tmp_path, openai_env(fake.base_url, IMAGEBOT_PROVIDERS="openai",
                                                      IMAGEBOT_MODERATION="on"), FAST))
    async with bot:
        yield bot


@pytest.fixture
async def moderation(tmp_path: Path, fake: FakeOpenAI) -> AsyncIterator[Moderation]:
    """The screen on the real SDK client, as ``bot.app`` builds it (0.5 s timeout from FAST)."""
    moderator = build_moderator(make_config(tmp_path, openai_env(fake.base_url), FAST))
    assert isinstance(moderator, OpenAIModerator)
    screen = Moderation(moderator)
    yield screen
    await screen.aclose()


def ctx(**kw: object):  # type: ignore[no-untyped-def]
    return dataclasses.replace(CTX, address=ADDRESS, **kw)


async def refusal(screen: Moderation, prompt: str, *images: bytes, **kw: object) -> ValidationError:
    with pytest.raises(ValidationError) as refused:
        await screen.screen(prompt, images, **{"check": True, **kw})  # type: ignore[arg-type]
    assert OPENAI_KEY not in str(refused.value)
    return refused.value


def picture(seed: int) -> bytes:
    return tiny_png(seed)


# -- through the core: what it costs ------------------------------------------------------------------------


async def test_a_flagged_prompt_is_refused_naming_the_category_at_no_cost(core: Imagebot, fake: FakeOpenAI) -> None:
    fake.moderation.flag("knife", "violence/graphic")
    before = (await core.credits(USER)).balance
    with pytest.raises(ValidationError, match="graphic violence") as refused:
        await core.enqueue(ctx(), "imagine", options=ImagineOptions("a bloody knife fight"), queued=False)
    assert str(refused.value) == "This prompt was flagged for graphic violence. Nothing was charged."
    assert refused.value.code == "IMG-MOD-FLAGGED"
    assert (await core.credits(USER)).balance == before and (await core.credits(USER)).recent == []
    assert fake.moderation.seen[-1]["model"] == "omni-moderation-latest" == MODEL
    queued = await core.enqueue(ctx(), "imagine", options=ImagineOptions("a calm lake"), queued=False)
    await core.run(queued.generation_id)
    assert (await core.credits(USER)).balance < before


async def test_reference_images_go_to_moderation_as_data_urls(core: Imagebot, fake: FakeOpenAI) -> None:
    await core.enqueue(ctx(), "imagine", options=ImagineOptions("like this", reference=tiny_png(3)), queued=False)
    parts = fake.moderation.seen[-1]["input"]
    assert parts[0] == {"type": "text", "text": "like this"}
    assert parts[1]["type"] == "image_url" and parts[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert fake.moderation.calls[-1].images == [tiny_png(3)]


async def test_sexual_passes_only_in_an_age_restricted_channel_of_a_server_that_allows_it(
        core: Imagebot, fake: FakeOpenAI) -> None:
    fake.moderation.flag("nude", "sexual")
    fake.moderation.flag("child", "sexual/minors")
    with pytest.raises(ValidationError, match="sexual content"):
        await core.enqueue(ctx(adult_channel=True), "imagine", options=ImagineOptions("a nude study"), queued=False)
    await core.change_settings(dataclasses.replace(CTX, is_admin=True), {"adult": "on"})
    with pytest.raises(ValidationError, match="sexual content"):
        await core.enqueue(ctx(), "imagine", options=ImagineOptions("a nude study"), queued=False)
    await core.enqueue(ctx(adult_channel=True), "imagine", options=ImagineOptions("a nude study"), queued=False)
    with pytest.raises(ValidationError, match="minors"):
        await core.enqueue(ctx(adult_channel=True), "imagine", options=ImagineOptions("a nude child"), queued=False)


async def test_the_blocklist_applies_always_words_and_patterns(core: Imagebot, fake: FakeOpenAI) -> None:
    admin = dataclasses.replace(CTX, is_admin=True)
    await core.change_settings(admin, {"moderation": "off", "blocklist": "clown, /sp[i1]der/"})
    before = (await core.credits(USER)).balance
    for prompt, named in (("a sad Clown", "'Clown'"), ("a sp1derweb", "'sp1der'")):
        with pytest.raises(ValidationError, match="which this server blocks") as refused:
            await core.enqueue(ctx(), "imagine", options=ImagineOptions(prompt), queued=False)
        assert named in str(refused.value) and refused.value.code == "IMG-MOD-BLOCKED"
        assert "/sp[i1]der/" not in str(refused.value)  # the words the asker typed, never the pattern
    assert (await core.credits(USER)).balance == before
    await core.enqueue(ctx(), "imagine", options=ImagineOptions("clowns are words too"), queued=False)  # whole words
    assert fake.moderation.calls == []  # moderation is off here: the blocklist alone ran
    with pytest.raises(ValidationError, match="regular expression"):
        await core.change_settings(admin, {"blocklist": "/([/"})
    with pytest.raises(ValidationError, match="repeats a group"):
        await core.change_settings(admin, {"blocklist": "/(a|aa)+b/"})


async def test_moderation_down_refuses_clearly_and_charges_nothing(core: Imagebot, fake: FakeOpenAI) -> None:
    fake.moderation.down = True
    before = (await core.credits(USER)).balance
    with pytest.raises(ValidationError, match="unavailable") as refused:
        await core.enqueue(ctx(), "imagine", options=ImagineOptions("a calm lake"), queued=False)
    assert refused.value.code == "IMG-MOD-UNAVAILABLE" and OPENAI_KEY not in str(refused.value)
    assert (await core.credits(USER)).balance == before


async def test_a_server_cannot_turn_moderation_on_without_a_key(tmp_path: Path) -> None:
    bot = build_core(make_config(tmp_path, {}, FAST))
    async with bot:
        with pytest.raises(ValidationError, match="OPENAI_API_KEY"):
            await bot.change_settings(dataclasses.replace(CTX, is_admin=True), {"moderation": "on"})


# -- the screen on the real SDK -----------------------------------------------------------------------------


async def test_a_clean_prompt_passes_and_a_flagged_one_names_every_category(
        moderation: Moderation, fake: FakeOpenAI) -> None:
    await moderation.screen("a calm lake at dawn", check=True)
    assert fake.moderation.calls[-1].texts == ["a calm lake at dawn"]
    assert fake.moderation.calls[-1].authorization == f"Bearer {OPENAI_KEY}"
    fake.moderation.flag("gore", "violence", "violence/graphic")
    fake.moderation.flag("hate speech", "hate")
    refused = await refusal(moderation, "gore and HATE SPEECH")
    assert refused.message == ("This prompt was flagged for hate, violence and graphic violence. "
                               "Nothing was charged.")
    assert refused.code == "IMG-MOD-FLAGGED"


async def test_images_go_one_per_request_as_data_urls_with_the_prompt_on_the_first(
        moderation: Moderation, fake: FakeOpenAI) -> None:
    images = [picture(1), picture(2), picture(3)]
    await moderation.screen("blend these", images, check=True)
    calls = fake.moderation.calls[-3:]
    assert sorted((c.texts, c.images) for c in calls) == sorted(
        [(["blend these"], [images[0]]), ([], [images[1]]), ([], [images[2]])])
    for call in calls:
        for part in call.body["input"]:
            if part["type"] == "image_url":
                url = part["image_url"]["url"]
                assert url.startswith("data:image/png;base64,")
                assert base64.b64decode(url.split(",", 1)[1]) in images
    fake.moderation.flag_image(images[2], "violence")
    refused = await refusal(moderation, "blend these", *images)
    assert refused.message == "An input image was flagged for violence. Nothing was charged."


async def test_the_endpoint_takes_one_image_per_request_which_is_why_they_are_split(fake: FakeOpenAI) -> None:
    client = openai.AsyncOpenAI(api_key=OPENAI_KEY, base_url=fake.base_url, max_retries=0, timeout=2)
    two = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,"
                                                      + base64.b64encode(picture(i)).decode()}} for i in (1, 2)]
    try:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.moderations.create(model=MODEL, input=two)  # type: ignore[arg-type]
        assert refused.value.code == "too_many_images"
        with pytest.raises(openai.NotFoundError):
            await client.moderations.create(model="omni-moderation-2099", input="hello")
        answer = await client.moderations.create(model=MODEL, input=two[:1])
        assert answer.model == "omni-moderation-2024-09-26" and len(answer.results) == 1
    finally:
        await client.close()


async def test_an_image_flagged_with_the_prompt_says_so(moderation: Moderation, fake: FakeOpenAI) -> None:
    fake.moderation.flag_image(picture(5), "self-harm")
    refused = await refusal(moderation, "like this", picture(5))
    assert refused.message == "This prompt or an input image was flagged for self-harm. Nothing was charged."


async def test_sexual_passes_with_adult_ok_and_minors_never(moderation: Moderation, fake: FakeOpenAI) -> None:
    fake.moderation.flag("nude", "sexual")
    fake.moderation.flag("schoolgirl", "sexual", "sexual/minors")
    fake.moderation.flag("brawl", "violence")
    assert "sexual content" in (await refusal(moderation, "a nude study")).message
    await moderation.screen("a nude study", check=True, adult_ok=True)
    refused = await refusal(moderation, "a nude schoolgirl", adult_ok=True)
    assert refused.message == "This prompt was flagged for sexual content involving minors. Nothing was charged."
    refused = await refusal(moderation, "a nude brawl", adult_ok=True)
    assert refused.message == "This prompt was flagged for violence. Nothing was charged."  # sexual is fine here
    fake.moderation.flag_image(picture(9), "sexual")
    await moderation.screen("a figure study", [picture(9)], check=True, adult_ok=True)
    assert "sexual" in (await refusal(moderation, "a figure study", picture(9))).message


@pytest.mark.parametrize(("outcome", "level"), [(500, logging.WARNING), (503, logging.WARNING),
                                                (429, logging.WARNING), (401, logging.ERROR),
                                                ("slow", logging.WARNING)])
async def test_moderation_that_cannot_be_asked_refuses_without_the_key(
        moderation: Moderation, fake: FakeOpenAI, caplog: pytest.LogCaptureFixture, outcome: int | str,
        level: int) -> None:
    fake.moderation.slow_seconds = 1.0
    fake.moderation.fail(outcome)
    with caplog.at_level(logging.INFO):
        refused = await refusal(moderation, "a calm lake")
    assert refused.code == "IMG-MOD-UNAVAILABLE"
    assert refused.message == ("Moderation is unavailable right now, so this prompt could not be checked; "
                               "nothing was charged. Try again in a few minutes.")
    assert OPENAI_KEY not in caplog.text and OPENAI_KEY[:12] not in caplog.text
    assert any(r.levelno == level and "refused unchecked" in r.getMessage() for r in caplog.records)
    await moderation.screen("a calm lake", check=True)  # the next check is asked again


async def test_a_moderation_model_the_vendor_does_not_serve_refuses(fake: FakeOpenAI) -> None:
    client = openai.AsyncOpenAI(api_key=OPENAI_KEY, base_url=fake.base_url, max_retries=0, timeout=2)
    screen = Moderation(OpenAIModerator(client, "omni-moderation-2099", secrets=(OPENAI_KEY,)))
    try:
        assert (await refusal(screen, "a calm lake")).code == "IMG-MOD-UNAVAILABLE"
    finally:
        await screen.aclose()


async def test_an_unreachable_moderation_model_refuses(tmp_path: Path) -> None:
    moderator = build_moderator(make_config(tmp_path, openai_env("http://127.0.0.1:9/v1"), FAST))
    assert moderator is not None
    screen = Moderation(moderator)
    try:
        assert (await refusal(screen, "a calm lake")).code == "IMG-MOD-UNAVAILABLE"
    finally:
        await screen.aclose()


async def test_check_off_asks_nobody_and_no_moderator_refuses_when_on(fake: FakeOpenAI) -> None:
    fake.moderation.flag("knife", "violence")
    screen = Moderation(None)
    assert not screen.available
    await screen.screen("a knife", check=False)
    refused = await refusal(screen, "a knife")
    assert refused.code == "IMG-MOD-UNAVAILABLE" and "OPENAI_API_KEY" in refused.message
    assert fake.moderation.calls == []


async def test_no_key_no_moderator(tmp_path: Path) -> None:
    assert build_moderator(make_config(tmp_path, {}, FAST)) is None
    moderator: Moderator | None = build_moderator(make_config(tmp_path, openai_env("http://127.0.0.1:9/v1"), FAST))
    assert moderator is not None and OPENAI_KEY not in repr(moderator)
    await moderator.aclose()


# -- the blocklist ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("prompt", "entries", "named"), [
    ("a sad Clown!", ["clown"], "Clown"),
    ("ａ ｓａｄ ｃｌｏｗｎ", ["clown"], "clown"),  # fullwidth letters are letters (NFKC)
    ("a  red\tballoon", ["red balloon"], "red balloon"),  # a phrase across any spaces
    ("learn c++ today", ["c++"], "c++"),
    ("a k1lling spree", [r"/k[i1]ll(s|ed|ing)?/"], "k1lling"),
    ("FUUUCK that", ["/f+u+c+k+/"], "FUUUCK"),
    ("a NAZIS flag", [r"/\bn[a@4]z[i1!]s?\b/"], "NAZIS"),
])
def test_the_blocklist_names_what_it_found(prompt: str, entries: list[str], named: str) -> None:
    assert blocked(prompt, parse_blocklist(entries)) == named


@pytest.mark.parametrize(("prompt", "entries"), [
    ("concatenate", ["cat"]), ("clowns", ["clown"]), ("a red, balloon", ["red balloon"]), ("spider", ["/sp1der/"]),
])
def test_the_blocklist_lets_other_words_through(prompt: str, entries: list[str]) -> None:
    assert blocked(prompt, parse_blocklist(entries)) is None


async def test_a_blocked_word_is_refused_before_moderation_is_asked(moderation: Moderation, fake: FakeOpenAI) -> None:
    refused = await refusal(moderation, "a Knife fight", blocklist=parse_blocklist(["knife"]))
    assert refused.message == "This prompt contains 'Knife', which this server blocks. Nothing was charged."
    assert refused.code == "IMG-MOD-BLOCKED" and fake.moderation.calls == []
    await moderation.screen("a Knife fight", blocklist=["spoon"], check=False)


def test_entries_are_stored_normalised_once() -> None:
    assert parse_blocklist(["  Clown ", "clown", "red   balloon", "/x+/", "/x+/", "ｃａｔ"]) == (
        "Clown", "red balloon", "/x+/", "cat")


@pytest.mark.parametrize(("entries", "says"), [
    (["ok", "  "], "entry 2 is empty"),
    (["x" * 101], "is 101 characters; the limit is 100"),
    ([f"w{i}" for i in range(101)], "at most 100 entries; got 101"),
    (["//"], "empty pattern"),
    (["/([/"], "'/([/' is not a valid regular expression: unterminated character set"),
    (["/(a|aa)+b/"], "'/(a|aa)+b/' repeats a group"),
    (["/(a)\\1/"], "back-reference"),
    (["/(?=a)b/"], "lookahead or lookbehind"),
    (["/(?s)a.b/"], "flags"),
    (["/a{40}/"], "repeats up to 40 times; the limit is 32"),
    (["/x?/"], "'/x?/' matches empty text, so it would block every prompt"),
    (["/a.*b.*c/"], "'/a.*b.*c/' could take too long to check a long prompt"),
    (["/\\w*\\w*b/"], "could take too long"),
    (["bad\u200bword"], "invisible characters"),
    ([r"/\w*nazi\w*/", r"/\w*nazj\w*/", r"/\w*nazk\w*/", r"/\w*nazl\w*/", r"/\w*nazm\w*/"],
     "patterns together could take too long"),
    ("clown", "is a list"),
    ([3], "are text"),
])
def test_a_bad_blocklist_is_refused_naming_the_entry(entries: list[str], says: str) -> None:
    with pytest.raises(ValidationError) as refused:
        parse_blocklist(entries)
    assert says in refused.value.message and refused.value.code == "IMG-VALID-BLOCKLIST"


async def test_a_stored_entry_the_bot_cannot_use_refuses_until_an_admin_fixes_it(moderation: Moderation) -> None:
    refused = await refusal(moderation, "a calm lake", blocklist=["/(a|aa)+b/"], check=False)
    assert refused.code == "IMG-VALID-BLOCKLIST" and "/settings" in refused.message
    assert "Nothing was charged." in refused.message


def at_the_ceiling(shape: str) -> list[str]:
    """Variants of ``shape`` (a digit added at the end) until the list's ceiling is reached."""
    entries: list[str] = []
    total = 0
    for i in range(LIST_BUDGET):
        candidate = f"{shape[:-1]}{i}/"
        [entry] = compile_blocklist([candidate])
        if total + entry.cost > LIST_BUDGET:
            return entries
        entries.append(candidate)
        total += entry.cost
    return entries


@pytest.mark.parametrize("shape", [r"/a*a*b/", r"/[ab]*[ab]*c/", r"/a*?a*?b/", r"/\s*\s*x/",
                                   r"/\w*" + "a" * 30 + "b/", r"/\w+ing\b/",
                                   r"/(a|b|c|d)?(a|b|c|d)?(a|b|c|d)?(a|b|c|d)?x/"])
def test_no_list_the_rules_take_can_stall_the_bot(shape: str) -> None:
    """The costliest lists the rules take, on prompts built to make Python's engine backtrack, each checked
    well under a second (``/a*a*b/`` alone took over a minute on 4,000 characters before the caps)."""
    entries = parse_blocklist(at_the_ceiling(shape))
    assert len(entries) >= 2 and all(0 < e.cost <= PATTERN_BUDGET for e in compile_blocklist(entries))
    for prompt in ("a" * 4000, "a " * 2000, "ab" * 2000, "nazi" * 1000, "a" + " " * 3998 + "a"):
        start = time.perf_counter()
        assert blocked(prompt, entries) is None
        assert time.perf_counter() - start < 1.0, (shape, prompt[:8])


# -- configuration ------------------------------------------------------------------------------------------


def test_moderation_on_without_a_key_stops_the_start_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="IMAGEBOT_MODERATION turns moderation on, but OPENAI_API_KEY is not set"):
        make_config(tmp_path, {"IMAGEBOT_MODERATION": "on"}, FAST)
    with pytest.raises(ConfigError, match="IMAGEBOT_MODERATION must be on or off"):
        make_config(tmp_path, {"IMAGEBOT_MODERATION": "maybe"}, FAST)
    (tmp_path / "imagebot.toml").write_text("[moderation]\nenabled = true\n")
    with pytest.raises(ConfigError, match=r"moderation\.enabled \(IMAGEBOT_MODERATION\) turns moderation on, "
                                          "but OPENAI_API_KEY"):
        load_config(env={}, path=tmp_path / "imagebot.toml")
    config = load_config(env={"OPENAI_API_KEY": OPENAI_KEY}, path=tmp_path / "imagebot.toml")
    assert config.moderation.enabled and OPENAI_KEY not in repr(config)
    assert make_config(tmp_path, openai_env("http://127.0.0.1:9/v1", IMAGEBOT_MODERATION="on")).moderation.enabled
    assert not make_config(tmp_path, {}).moderation.enabled


async def test_a_confirmed_proposal_is_not_sent_to_moderation_twice(core: Imagebot, fake: FakeOpenAI) -> None:
    await core.change_settings(dataclasses.replace(CTX, is_admin=True), {"confirm_above": "1"})
    quote = await core.quote(ctx(), "imagine", options=ImagineOptions("a calm lake"))
    assert quote.confirm and quote.proposal_id
    asked = len(fake.moderation.seen)
    assert asked >= 1  # the quote screened it
    queued = await core.enqueue_proposal(ctx(), quote.proposal_id, queued=False)
    await core.run(queued.generation_id)
    assert len(fake.moderation.seen) == asked  # screened once, when quoted
