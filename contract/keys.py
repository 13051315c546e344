"""Redis key layout of the projections: every key Hourglass reads or writes is named here.

Projections live in a generation (`<prefix>:{p<N>}:g<gen>:...`) so a replay can build a new one beside
the live one and switch. The counts themselves are cells (contract.cells names their keys); per partition
there is a watermark: the last stream sequence applied.

Every key of a partition carries the partition's hash tag `{p<N>}` right after the prefix, and what
an apply, evict, thaw, restore, swap or read script checks (the generation pointer, the fence) has a
copy per partition. In a Redis Cluster a script may only touch keys of one slot, and the hash tag puts
all of a partition's keys in one slot: each script stays one atomic step on one shard. On a single
node the tag changes nothing. Shared keys (the generation counter, projectors, the replay lock) are
never used in a script together with partition keys and keep plain names; the audit's records share
the tag `{audit}`, so each record and its summaries are written in one MULTI on one shard.
"""

from __future__ import annotations

from dataclasses import dataclass

from contract.hours import hour_token

GEN_PLACEHOLDER = "{gen}"
FIRST_GENERATION = 1


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str

    @staticmethod
    def tag(partition: int) -> str:
        """The partition's hash tag: every key of the partition hashes to the slot of this text."""
        return f"{{p{partition}}}"

    def _part(self, partition: int) -> str:
        return f"{self.prefix}:{self.tag(partition)}"

    def generation(self, partition: int) -> str:
        """The generation that reads and the live projector of the partition use (a copy per partition,
        so a script checks it on the partition's own slot); missing means the partition's shard lost
        its data (or Redis still holds the layout before hash tags)."""
        return f"{self._part(partition)}:gen"

    def live_generation(self, raw: bytes | str | None) -> int:
        """The generation a GET of `generation` names: a missing key means 1, the first one."""
        return int(raw) if raw is not None else FIRST_GENERATION

    @property
    def generation_counter(self) -> str:
        """Hands out new generation numbers to replays."""
        return f"{self.prefix}:gen:next"

    def gen_pattern(self, gen: int | str, partition: int) -> str:
        """SCAN pattern of every key of one generation of one partition (`{` is no glob character)."""
        return f"{self._part(partition)}:g{gen}:*"

    def gen_prefix(self, partition: int) -> str:
        """What every generation key of the partition starts with, followed by `<gen>:`."""
        return f"{self._part(partition)}:g"

    def watermark(self, gen: int | str, partition: int) -> str:
        return f"{self._part(partition)}:g{gen}:wm"

    def dedup(self, gen: int | str, partition: int) -> str:
        """Sorted set of the partition's `user\nkey` pairs, scored by the stream time (ms) each was last
        counted; the apply trims it to the dedup window, so it holds only keys inside the window."""
        return f"{self._part(partition)}:g{gen}:dedup"

    def scratch(self, partition: int) -> str:
        """A HyperLogLog the apply script builds and deletes within one call (never seen outside it)."""
        return f"{self._part(partition)}:scratch"

    def lease(self, partition: int) -> str:
        """Which projector applies the partition now; expires unless renewed."""
        return f"{self._part(partition)}:lease"

    @property
    def members(self) -> str:
        """Live projectors (sorted set, score = heartbeat expiry in ms), to share partitions fairly."""
        return f"{self.prefix}:projectors"

    def fence(self, partition: int) -> str:
        """The lease epoch of a partition; an apply carrying another epoch is refused."""
        return f"{self._part(partition)}:fence"

    def dirty(self, gen: int | str, partition: int) -> str:
        """Sorted set of the partition's hour tokens changed since the last snapshot, each scored by
        the watermark of the apply that changed it last."""
        return f"{self._part(partition)}:g{gen}:dirty"

    def trouble(self, partition: int) -> str:
        """Why the partition's projector is not applying (stalled, failing); expires unless restated."""
        return f"{self._part(partition)}:trouble"

    def gap(self, gen: int | str, partition: int) -> str:
        """Set when retention dropped events of the partition before this generation applied them."""
        return f"{self._part(partition)}:g{gen}:gap"

    def cold(self, gen: int | str, partition: int) -> str:
        """Hash of the partition's hours that left Redis: hour token -> the watermark of the snapshot
        entry that holds the hour. Reads and late events go to that entry."""
        return f"{self._part(partition)}:g{gen}:cold"

    @property
    def replay_lock(self) -> str:
        """Held by the one replay that may run at a time (full or single-hour)."""
        return f"{self.prefix}:replay"

    @property
    def audit_through(self) -> str:
        """Sorted set whose one member `hour` scores the hour through which every hour the log held was
        audited: compaction keeps the events of later hours (raised only, with ZADD GT)."""
        return f"{self.prefix}:{{audit}}:through"

    def audit_hour(self, hour: int) -> str:
        """Hash of the audit's last result for an hour (verdict, at, log, served, differs)."""
        return f"{self.prefix}:{{audit}}:hour:{hour_token(hour)}"

    def audit_day(self, token: str) -> str:
        """Hash of the audit's last result for a day rollup (`d...` token) against its components."""
        return f"{self.prefix}:{{audit}}:day:{token}"

    def audit_claim(self, hour: int) -> str:
        """Held (SET NX PX) by the one audit process auditing the hour now."""
        return f"{self.prefix}:{{audit}}:claim:{hour_token(hour)}"

    @property
    def audit_last(self) -> str:
        """Hash of the last hour audited by any audit process."""
        return f"{self.prefix}:{{audit}}:last"

    @property
    def audit_mismatches(self) -> str:
        """Sorted set of hour tokens (and day rollup tokens) found mismatched, scored by when (ms)."""
        return f"{self.prefix}:{{audit}}:mismatches"

    def phases(self, gen: int | str, partition: int) -> str:
        """The day rollups the generation keeps (contract.buckets.phases_text), set once when the
        generation starts and never changed: a missing key means none (a generation from before)."""
        return f"{self._part(partition)}:g{gen}:phases"
