"""Redis key layout of the projections: every key Hourglass reads or writes is named here.

Projections live in a generation (`<prefix>:g<gen>:...`) so a replay can build a new one beside the
live one and switch atomically. Per hour and partition there is a HyperLogLog of users and a hash of
counters; per partition a watermark: the last stream sequence applied.
"""

from __future__ import annotations

from dataclasses import dataclass

from contract.hours import hour_token

GEN_PLACEHOLDER = "{gen}"
FIRST_GENERATION = 1


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str

    @property
    def generation(self) -> str:
        """The generation that reads and live projectors use; missing means Redis lost its data."""
        return f"{self.prefix}:gen"

    def live_generation(self, raw: bytes | str | None) -> int:
        """The generation a GET of `generation` names: a missing key means 1, the first one."""
        return int(raw) if raw is not None else FIRST_GENERATION

    @property
    def generation_counter(self) -> str:
        """Hands out new generation numbers to replays."""
        return f"{self.prefix}:gen:next"

    def gen_pattern(self, gen: int | str) -> str:
        return f"{self.prefix}:g{gen}:*"

    def watermark(self, gen: int | str, partition: int) -> str:
        return f"{self.prefix}:g{gen}:wm:{partition}"

    def dedup(self, gen: int | str, partition: int) -> str:
        """Sorted set of the partition's `user\nkey` pairs, scored by the stream time (ms) each was last
        counted; the apply trims it to the dedup window, so it holds only keys inside the window."""
        return f"{self.prefix}:g{gen}:dedup:{partition}"

    def lease(self, partition: int) -> str:
        """Which projector applies the partition now; expires unless renewed."""
        return f"{self.prefix}:lease:{partition}"

    @property
    def members(self) -> str:
        """Live projectors (sorted set, score = heartbeat expiry in ms), to share partitions fairly."""
        return f"{self.prefix}:projectors"

    def fence(self, partition: int) -> str:
        """The lease epoch of a partition; an apply carrying another epoch is refused."""
        return f"{self.prefix}:fence:{partition}"

    def dirty(self, gen: int | str, partition: int) -> str:
        """Sorted set of the partition's hour tokens changed since the last snapshot, each scored by
        the watermark of the apply that changed it last."""
        return f"{self.prefix}:g{gen}:dirty:{partition}"

    def trouble(self, partition: int) -> str:
        """Why the partition's projector is not applying (stalled, failing); expires unless restated."""
        return f"{self.prefix}:trouble:{partition}"

    def gap(self, gen: int | str, partition: int) -> str:
        """Set when retention dropped events of the partition before this generation applied them."""
        return f"{self.prefix}:g{gen}:gap:{partition}"

    def cold(self, gen: int | str, partition: int) -> str:
        """Hash of the partition's hours that left Redis: hour token -> the watermark of the snapshot
        entry that holds the hour. Reads and late events go to that entry."""
        return f"{self.prefix}:g{gen}:cold:{partition}"

    def cold_template(self, partition: int) -> str:
        return self.cold(GEN_PLACEHOLDER, partition)

    @property
    def replay_lock(self) -> str:
        """Held by the one replay that may run at a time (full or single-hour)."""
        return f"{self.prefix}:replay"

    @property
    def audit_through(self) -> str:
        """Sorted set whose one member `hour` scores the hour through which every hour the log held was
        audited: compaction keeps the events of later hours (raised only, with ZADD GT)."""
        return f"{self.prefix}:audit:through"

    def audit_hour(self, hour: int) -> str:
        """Hash of the audit's last result for an hour (verdict, at, log, served, differs)."""
        return f"{self.prefix}:audit:hour:{hour_token(hour)}"

    def audit_claim(self, hour: int) -> str:
        """Held (SET NX PX) by the one audit process auditing the hour now."""
        return f"{self.prefix}:audit:claim:{hour_token(hour)}"

    @property
    def audit_last(self) -> str:
        """Hash of the last hour audited by any audit process."""
        return f"{self.prefix}:audit:last"

    @property
    def audit_mismatches(self) -> str:
        """Sorted set of hour tokens found mismatched, scored by when (ms)."""
        return f"{self.prefix}:audit:mismatches"

    def users(self, gen: int | str, hour: int, partition: int) -> str:
        return f"{self.prefix}:g{gen}:{hour_token(hour)}:{partition}:users"

    def counts(self, gen: int | str, hour: int, partition: int) -> str:
        return f"{self.prefix}:g{gen}:{hour_token(hour)}:{partition}:counts"

    def users_template(self, hour: int, partition: int) -> str:
        """`users` with the generation left as GEN_PLACEHOLDER, for scripts that read it first."""
        return self.users(GEN_PLACEHOLDER, hour, partition)

    def counts_template(self, hour: int, partition: int) -> str:
        return self.counts(GEN_PLACEHOLDER, hour, partition)


CLICKS_FIELD = "clicks"
IMPRESSIONS_FIELD = "impressions"
