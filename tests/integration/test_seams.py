"""The in-memory projections used by unit tests answer exactly as the Redis script does, case for case."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from api.reader import Reader
from contract.keys import Keys
from contract.schema import Event, Kind, batch_of
from deploy.settings import Settings
from projector.projections.store import Outcome, ProjectionStore
from tests.fakes import MemoryProjections, Projections
from tests.reference_fold import Message, fold

HOUR = 3_600_000
WINDOW_S = 0.05


def msg(seq: int, at: int, *events: Event) -> Message:
    return Message(seq, batch_of(events=events), stream_ms=at)


def click(user: str, key: str | None = None, hour: int = 0) -> Event:
    return Event(hour * HOUR + 1, user, Kind.CLICK, key)


SCRIPT: list[tuple[int, list[Message]]] = [
    (0, [msg(1, 0, click("a"), click("b", "k")), msg(2, 10, click("b", "k"), click("c", "k"))]),
    (0, [msg(1, 0, click("z"))]),  # a redelivery below the watermark: refused
    (2, [msg(3, 40, click("b", "k", hour=1)), msg(4, 70, click("b", "k"))]),  # inside, then past the window
    (4, [msg(5, 200, click("d"), Event(HOUR + 5, "e", Kind.IMPRESSION, "k"))]),
]


async def run_script(
    projections: Projections, totals: Callable[[int], Awaitable[tuple[int, int, int]]]
) -> list[object]:
    seen: list[object] = []
    gen = await projections.current_generation(0)
    for expected, messages in SCRIPT:
        result = await projections.apply(gen, 0, expected, fold(messages))
        seen.append((result.outcome, result.watermark))
    seen.append(await totals(0))
    seen.append(await totals(1))
    seen.append((await projections.apply(gen + 1, 0, 5, fold([msg(6, 300, click("x"))]))).outcome)
    seen.append((await projections.apply(gen, 0, 5, fold([msg(6, 300, click("x"))]), epoch="nope")).outcome)
    return seen


async def test_the_fake_projections_answer_as_the_redis_script_does(redis: Redis, settings: Settings) -> None:
    store = ProjectionStore(
        redis, Keys(settings.key_prefix), dedup_window_s=WINDOW_S, partitions=settings.partitions
    )
    await redis.set(store.keys.fence(0), "an-epoch")
    reader = Reader(redis, Keys(settings.key_prefix), settings.partitions)

    async def redis_totals(hour: int) -> tuple[int, int, int]:
        t = await reader.hour(hour)
        return t.unique_users, t.clicks, t.impressions

    fake = MemoryProjections(window_ms=int(WINDOW_S * 1000), fences={0: "an-epoch"})

    async def fake_totals(hour: int) -> tuple[int, int, int]:
        return fake.totals(hour)

    real = await run_script(store, redis_totals)
    assert real == await run_script(fake, fake_totals)
    assert real[1] == (Outcome.WATERMARK_MOVED, 2)
    # Hour 0: a, b, c, d; b's retry at 10 refused, its retry at 70 (past the 50 ms window) counted again.
    assert real[4] == (4, 5, 0)
    # Hour 1: b's retry naming hour 1 at 40 was refused, so only e's keyed impression.
    assert real[5] == (1, 0, 1)
    assert real[6:] == [Outcome.GENERATION_MOVED, Outcome.FENCED]
