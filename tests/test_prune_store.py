"""What ``imagebot prune`` stands on (issue 13): the ledger says which stored images the bot may still need
(``live_images``, on SQLite, memory and PostgreSQL), and the image store removes the rest once they are
old enough (``ImageStore.prune``, on real files with real mtimes).

What an operator would notice: recent results, their reference images and anything a job still to run
reads are never pruned; old images nobody needs, old previews and dead temporary files are, and the
figures say how many and how much; every ledger row stays.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from bot.models import Identity
from providers.local import render
from storage.images import ImageStore
from storage.ledger import ImageRow, JobSpec, Ledger
from tests import test_ledger_contract as contract
from tests.test_ledger_contract import GEN, World

#: The ledger contract's parametrized fixture (sqlite, memory, postgres), used here under its own name.
world = contract.world

ALICE = Identity("discord", "g1", "alice")
LEASE = 30.0
DAY = 86_400.0


def sha(name: str) -> str:
    return (name.encode().hex() * 64)[:64]


def row(name: str) -> ImageRow:
    return ImageRow(sha(name), "image/png", 10, 64, 64)


def job() -> JobSpec:
    return JobSpec(payload={"kind": "imagine"}, address={"platform": "discord"}, deliver_by=0.0)


async def made(ledger: Ledger, rid: str, images: list[str], *, options: dict[str, object] | None = None,
               queued: bool = False, with_job: bool = False, settle: bool = True) -> None:
    await ledger.reserve(ALICE, rid, 1, max_concurrent=100, lease=LEASE,
                         generation={**GEN, "options": options or {}},
                         job=job() if queued or with_job else None, queued=queued)
    if settle:
        assert (await ledger.settle(rid, 1, status="COMPLETED", images=[row(n) for n in images])).charged


async def test_live_images_are_recent_results_their_references_and_what_open_jobs_need(world: World) -> None:
    ledger = await world.ledger(starting_credits=100)
    # long ago
    await made(ledger, "old", ["old-image"], options={"reference_sha256": sha("old-reference")})
    await made(ledger, "old-source", ["source-image"])
    await made(ledger, "old-done-job", ["done-job-image"], with_job=True)
    assert await ledger.finish_job("old-done-job", "delivered")
    await made(ledger, "old-delivering", ["delivering-image"], with_job=True)  # settled, still being posted
    await made(ledger, "old-queued", [], queued=True, settle=False,
               options={"reference_sha256": sha("queued-reference"), "source": "old-source"})
    world.clock.advance(100 * DAY)
    since = world.clock.now - 90 * DAY
    # recent
    await made(ledger, "recent", ["recent-1", "recent-2"],
               options={"reference_sha256": sha("reference"),
                        "references_sha256": [sha("blend-1"), sha("blend-2")]})
    await ledger.reserve(ALICE, "recent-failed", 1, max_concurrent=100, lease=LEASE,
                         generation={**GEN, "options": {"references_sha256": [sha("failed-reference")]}})
    await ledger.refund("recent-failed", code="IMG-PROV-DOWN")

    live = await ledger.live_images(since)
    assert live == {sha(n) for n in ("recent-1", "recent-2", "reference", "blend-1", "blend-2", "failed-reference",
                                     "delivering-image", "queued-reference", "source-image")}
    before = await ledger.ledger_rows(ALICE)
    look = await world.ledger(read_only=True)  # a read: a read-only look answers the same, nothing written
    assert await look.live_images(since) == live
    assert await look.live_images(world.clock.now + 1) == {sha(n) for n in (
        "delivering-image", "queued-reference", "source-image")}
    assert await ledger.ledger_rows(ALICE) == before


def _age(path: Path, days: float) -> None:
    stamp = time.time() - days * DAY
    os.utime(path, (stamp, stamp))


async def test_prune_removes_old_unneeded_files_previews_and_leftovers_only(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "data")
    saved = [await store.save(render(f"picture {i}", "256x256", "natural", i, 0)) for i in range(4)]
    old_kept, old_gone, new_unneeded, new_kept = saved
    for image in (old_kept, old_gone):
        _age(image.path, 100)
    old_preview, _ = await store.save_preview("gen-1-0", render("p", "256x256", "natural", 9, 0))
    new_preview, _ = await store.save_preview("gen-2-0", render("q", "256x256", "natural", 8, 0))
    _age(old_preview, 100)
    leftover = old_gone.path.parent / ".tmp-deadbeef-0"  # a write that died half-way
    leftover.write_bytes(b"half")
    _age(leftover, 100)
    stranger = old_gone.path.parent / "notes.txt"  # not ours: never touched
    stranger.write_text("mine")
    _age(stranger, 100)
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"elsewhere")
    _age(outside, 100)
    link = store.root / old_gone.sha256[:2] / f"{'0' * 64}.png"
    link.symlink_to(outside)  # a link is never followed or removed, however old
    stamp = time.time() - 100 * DAY
    os.utime(link, (stamp, stamp), follow_symlinks=False)

    keep = {old_kept.sha256, new_kept.sha256}
    cutoff = time.time() - 90 * DAY
    expected = (3, old_gone.size_bytes + old_preview.stat().st_size + 4)
    assert await store.prune(keep, cutoff, dry_run=True) == expected
    assert old_gone.path.exists() and old_preview.exists() and leftover.exists()  # a dry run removes nothing

    assert await store.prune(keep, cutoff) == expected
    assert not old_gone.path.exists() and not old_preview.exists() and not leftover.exists()
    for still in (old_kept.path, new_unneeded.path, new_kept.path, new_preview, stranger, outside, link):
        assert still.exists() or still.is_symlink()
    assert store.load(old_kept.sha256, old_kept.mime) == old_kept.path.read_bytes()
    assert await store.prune(keep, cutoff) == (0, 0)  # nothing more to do


async def test_saving_stored_bytes_again_marks_them_needed_so_prune_keeps_them(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    data = render("a fox", "256x256", "natural", 1, 0)  # the offline sketch: the same bytes every time
    first = await store.save(data)
    _age(first.path, 100)
    again = await store.save(data)  # a new result with the same bytes, while a prune is being prepared
    assert again.path == first.path and again.path.stat().st_mtime > time.time() - 60
    assert await store.prune(set(), time.time() - 90 * DAY) == (0, 0)
    assert store.prune_files(set(), time.time() + 1) == (1, len(data))  # once old enough and unneeded, it goes
    assert await store.prune(set(), time.time()) == (0, 0)  # an empty store: nothing, no error
    assert await ImageStore(tmp_path / "never-used").prune(set(), time.time()) == (0, 0)


async def test_prune_with_the_ledgers_live_images_keeps_what_recent_results_need(world: World, tmp_path: Path) -> None:
    ledger = await world.ledger()
    store = ImageStore(tmp_path / "data")
    old = await store.save(render("old", "256x256", "natural", 1, 0))
    reference = await store.save(render("reference", "256x256", "natural", 2, 0))
    recent = await store.save(render("recent", "256x256", "natural", 3, 0))
    for image in (old, reference, recent):
        _age(image.path, 100)  # all old files: only the ledger's answer tells them apart
    await ledger.reserve(ALICE, "old", 1, max_concurrent=5, lease=LEASE, generation=GEN)
    await ledger.settle("old", 1, status="COMPLETED", images=[ImageRow(old.sha256, old.mime, old.size_bytes, 256, 256)])
    world.clock.advance(100 * DAY)
    await ledger.reserve(ALICE, "recent", 1, max_concurrent=5, lease=LEASE,
                         generation={**GEN, "options": {"reference_sha256": reference.sha256}})
    await ledger.settle("recent", 1, status="COMPLETED",
                        images=[ImageRow(recent.sha256, recent.mime, recent.size_bytes, 256, 256)])
    rows = await ledger.ledger_rows(ALICE)

    keep = await ledger.live_images(world.clock.now - 90 * DAY)
    assert await store.prune(keep, time.time() - 90 * DAY) == (1, old.size_bytes)
    assert not old.path.exists() and reference.path.exists() and recent.path.exists()
    assert await ledger.ledger_rows(ALICE) == rows  # every ledger row stays
    gen = await ledger.generation("old")
    assert gen is not None and gen.images[0].sha256 == old.sha256


async def test_a_waiting_confirmation_keeps_the_images_it_starts_from_until_it_is_taken_or_expires(
        world: World) -> None:
    """A Confirm for Variations of an old result: a prune meanwhile must not remove what the click will read."""
    ledger = await world.ledger(starting_credits=100)
    await made(ledger, "old-varied", ["varied-image"], options={"reference_sha256": sha("varied-reference")})
    await made(ledger, "old-other", ["other-image"])
    world.clock.advance(100 * DAY)
    since = world.clock.now - 90 * DAY
    assert await ledger.live_images(since) == set()
    await ledger.save_proposal("p-wait", ALICE, {"kind": "variations", "generation_id": "old-varied", "index": 0},
                               expires_at=world.clock.now + 600)
    await ledger.save_proposal("p-imagine", ALICE, {"kind": "imagine", "options": {"prompt": "a fox"}},
                               expires_at=world.clock.now + 600)
    kept = {sha("varied-image"), sha("varied-reference")}
    assert await ledger.live_images(since) == kept
    look = await world.ledger(read_only=True)
    assert await look.live_images(since) == kept
    assert await ledger.take_proposal("p-wait", ALICE) is not None  # confirmed: its job now says what it needs
    assert await ledger.live_images(since) == set()
    await ledger.save_proposal("p-late", ALICE, {"kind": "upscale", "generation_id": "old-other", "index": 0},
                               expires_at=world.clock.now + 60)
    assert await ledger.live_images(since) == {sha("other-image")}
    world.clock.advance(61)  # never confirmed: expired, nothing to keep for it
    assert await ledger.live_images(since) == set()
