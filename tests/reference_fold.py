"""The reference fold, for tests: one message at a time, the plain definition the projector's digest
(`projector/fold/digest.py`) must equal, as `tests/unit/test_digest.py` checks with hypothesis."""

from __future__ import annotations

from collections.abc import Iterable
from operator import attrgetter
from typing import NamedTuple

import msgspec
from nats.aio.msg import Msg

from contract import schema
from contract.buckets import QUARTER_MS, day_tokens, quarter_of, quarter_token
from contract.hours import hour_of, hour_token, parse_subject
from contract.schema import AnyBatch, Event, Kind
from deploy.settings import Settings
from projector.fold.deltas import CellDelta, Deltas, Keyed
from projector.fold.digest import Decoder
from projector.fold.rules import Rejected, screen
from projector.log.fetched import Meta, meta_of


class Message(NamedTuple):
    """One stream message as the fold sees it."""

    seq: int
    batch: AnyBatch
    stream_ms: int = 0
    """When JetStream stored it: the clock that idempotency windows are measured on."""


def fold(messages: Iterable[Message], after: int = 0) -> Deltas:
    """Fold messages in stream order, skipping every sequence at or below `after`.

    Users of unkeyed events go into their quarter-hour's set (adding a user twice changes nothing); keyed
    events are left whole to the apply, so a refused duplicate changes neither counts nor uniques.
    """
    deltas = Deltas()
    for seq, batch, stream_ms in messages:
        if seq <= after:
            continue
        deltas.last_seq = max(deltas.last_seq, seq)
        deltas.last_ms = max(deltas.last_ms, stream_ms)
        events = batch.events
        if not events:
            continue
        deltas.events += len(events)
        if not _fold_one_quarter(deltas, events):
            for event in events:
                _fold_event(deltas, event, stream_ms)
    return deltas


def _fold_one_quarter(deltas: Deltas, events: tuple[Event, ...]) -> bool:
    """The common case, a whole message in one quarter-hour and without keys, at C speed; False otherwise."""
    stamps = list(map(_ts, events))
    start = stamps[0] // QUARTER_MS * QUARTER_MS
    if min(stamps) < start or max(stamps) >= start + QUARTER_MS or any(map(_key, events)):
        return False
    kinds = list(map(_kind, events))
    clicks = kinds.count(Kind.CLICK)
    cell = deltas.hour(hour_of(start)).quarters[quarter_of(start)]
    cell.users.update(map(_user, events))
    cell.clicks += clicks
    cell.impressions += len(kinds) - clicks
    return True


def _fold_event(deltas: Deltas, event: Event, stream_ms: int) -> None:
    hour, quarter = hour_of(event.ts), quarter_of(event.ts)
    cell = deltas.hour(hour).quarters[quarter]
    if event.key is not None:
        deltas.keyed.append(Keyed(event.key, event.user, stream_ms, hour, event.kind, quarter))
        return
    cell.users.add(event.user)
    if event.kind is Kind.CLICK:
        cell.clicks += 1
    else:
        cell.impressions += 1


_ts, _key, _kind, _user = (attrgetter(name) for name in ("ts", "key", "kind", "user"))


def merge(a: Deltas, b: Deltas) -> Deltas:
    """Combine two folds as if their messages had been folded together (a's before b's)."""
    out = Deltas(
        keyed=a.keyed + b.keyed,
        last_seq=max(a.last_seq, b.last_seq),
        last_ms=max(a.last_ms, b.last_ms),
        events=a.events + b.events,
    )
    for source in (a, b):
        for hour, delta in source.hours.items():
            out.hour(hour).merge(delta)
    return out


class Read(NamedTuple):
    """A stream message as the projector takes it: what the fold may see, and what is dead."""

    message: Message
    rejected: list[Rejected]
    raw: Msg


def read(msg: Msg, settings: Settings, decoder: Decoder = schema.decode, meta: Meta | None = None) -> Read:
    """Decode and screen one message. Raises UnknownVersion: such a batch is never skipped.

    The one-message definition that `digest_fetched` (what the projector and replay run) must equal."""
    if meta is None:
        meta = meta_of(msg.reply)
    seq, stream_ms = meta.stream_seq, meta.stream_ms
    try:
        batch = decoder(msg.data)
    except schema.UnknownVersion:
        raise
    except (msgspec.DecodeError, ValueError) as exc:
        return Read(
            Message(seq, schema.batch_of(events=()), stream_ms), [Rejected(-1, f"not a batch: {exc}")], msg
        )
    try:
        hour, partition = parse_subject(settings.subject_prefix, msg.subject)
    except ValueError:
        reason = f"subject {msg.subject} is not <prefix>.<YYYYMMDDHH>.<partition>"
        return Read(Message(seq, schema.batch_of(events=()), stream_ms), [Rejected(-1, reason)], msg)
    kept, rejected = screen(batch, hour, partition, settings.partitions)
    return Read(Message(seq, kept, stream_ms), rejected, msg)


Cell = tuple[frozenset[str], int, int]
"""A stored bucket as the reference sees it: (users, clicks, impressions)."""


def cells(messages: Iterable[Message], phases: Iterable[int], window_ms: int) -> dict[str, Cell]:
    """Every non-empty stored bucket (hour, quarter-hour, day rollup of each phase) a log projects to,
    keyed events decided as apply.lua decides them: a user's key counts again only once `window_ms`
    of stream time passed since it last counted."""
    deltas = fold(messages)
    per: dict[tuple[int, int], CellDelta] = {}
    for hour, delta in deltas.hours.items():
        for quarter, cell in enumerate(delta.quarters):
            per.setdefault((hour, quarter), CellDelta()).merge(cell)
    last: dict[str, int] = {}
    for k in deltas.keyed:
        seen = last.get(k.member)
        if seen is None or k.stream_ms - seen > window_ms:
            last[k.member] = k.stream_ms
            cell = per.setdefault((k.hour, k.quarter), CellDelta())
            cell.users.add(k.user)
            cell.merge(CellDelta(set(), int(k.kind is Kind.CLICK), int(k.kind is Kind.IMPRESSION)))
    kept = tuple(phases)
    out: dict[str, CellDelta] = {}
    for (hour, quarter), cell in per.items():
        if not cell.clicks + cell.impressions:
            continue
        for token in (quarter_token(hour, quarter), hour_token(hour), *day_tokens(hour, quarter, kept)):
            out.setdefault(token, CellDelta()).merge(cell)
    return {token: (frozenset(c.users), c.clicks, c.impressions) for token, c in out.items()}
