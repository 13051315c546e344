"""Fetched stream messages as the projector reads them: column by column, each message's position
parsed from its reply subject; and their digest (deltas and dead letters) for this configuration."""

from __future__ import annotations

from typing import NamedTuple

from contract import schema
from contract.buckets import split_hours
from deploy.settings import Settings
from projector.fold.digest import Decoder, Digest, digest

APPLY_MAX_BYTES = 128 * 1024
"""Stream payload bytes folded into one apply at most (one message at least): about 2,500 events, a few
milliseconds of Redis, so no apply holds Redis long however large a fetch is (`./just bench-scripts`)."""


class Meta(NamedTuple):
    """Where a message sits, from its reply subject `$JS.ACK.[<domain>.<account>.]<stream>.<consumer>.
    <delivered>.<stream seq>.<consumer seq>.<timestamp ns>.<pending>[.<token>]`."""

    stream_seq: int
    consumer_seq: int
    delivered: int
    stream_ms: int
    pending: int


def meta_of(reply: str) -> Meta:
    tokens = reply.split(".")
    at = 4 if len(tokens) == 9 else 6  # the older form has no domain and account hash
    return Meta(
        int(tokens[at + 1]),
        int(tokens[at + 2]),
        int(tokens[at]),
        int(tokens[at + 3]) // 1_000_000,
        int(tokens[at + 4]),
    )


class Pulled(NamedTuple):
    subject: str
    data: bytes
    reply: str
    """Where its ack goes."""
    meta: Meta


class Fetched:
    """Fetched messages, column by column: the projector reads them as runs, never one object each."""

    __slots__ = ("consumer_seqs", "delivered", "payloads", "pending", "replies", "seqs", "stamps", "subjects")

    def __init__(self) -> None:
        self.subjects: list[str] = []
        self.payloads: list[bytes] = []
        self.replies: list[bytes] = []
        self.seqs: list[int] = []
        """Stream sequences."""
        self.consumer_seqs: list[int] = []
        self.delivered: list[int] = []
        """How many times each was delivered (1 the first time)."""
        self.stamps: list[int] = []
        """When JetStream stored each, in epoch ms."""
        self.pending = 0
        """Messages left for the consumer after the last one."""

    def __len__(self) -> int:
        return len(self.seqs)

    def add(self, subject: bytes, reply: bytes, data: bytes) -> None:
        tokens = reply.split(b".")
        at = 4 if len(tokens) == 9 else 6  # the older form has no domain and account hash
        self.subjects.append(subject.decode())
        self.payloads.append(data)
        self.replies.append(reply)
        self.delivered.append(int(tokens[at]))
        self.seqs.append(int(tokens[at + 1]))
        self.consumer_seqs.append(int(tokens[at + 2]))
        self.stamps.append(int(tokens[at + 3]) // 1_000_000)
        self.pending = int(tokens[at + 4])

    def at(self, i: int) -> Pulled:
        reply = self.replies[i].decode()
        return Pulled(self.subjects[i], self.payloads[i], reply, meta_of(reply))

    def head(self, n: int) -> Fetched:
        """The first `n` messages (`pending` stays that of the whole fetch)."""
        if n >= len(self):
            return self
        return self._part(0, n)

    def runs(self, max_bytes: int | None = None) -> list[Fetched]:
        """The messages in runs of at most `max_bytes` (APPLY_MAX_BYTES) of payload (a larger message is
        a run alone), each folded and applied on its own; `pending` stays that of the whole fetch."""
        if max_bytes is None:
            max_bytes = APPLY_MAX_BYTES
        found: list[Fetched] = []
        start, size = 0, 0
        for i, payload in enumerate(self.payloads):
            if i > start and size + len(payload) > max_bytes:
                found.append(self._part(start, i))
                start, size = i, 0
            size += len(payload)
        if start == 0:
            return [self]
        found.append(self._part(start, len(self)))
        return found

    def _part(self, start: int, stop: int) -> Fetched:
        part = Fetched()
        for name in self.__slots__:
            value = getattr(self, name)
            setattr(part, name, value[start:stop] if isinstance(value, list) else value)
        return part


def digest_fetched(
    fetched: Fetched, settings: Settings, after: int, decoder: Decoder = schema.decode
) -> Digest:
    """`digest` of fetched messages: their deltas past stream seq `after`, and their dead letters."""
    return digest(
        fetched.subjects,
        fetched.payloads,
        fetched.seqs,
        fetched.stamps,
        prefix=settings.subject_prefix,
        partitions=settings.partitions,
        after=after,
        decoder=decoder,
        dimensions=settings.dimension_names,
        pairs=settings.dimension_pair_names,
        split=split_hours(settings.day_phases),
    )
