"""The audit's results in Redis, under its own keys only: each hour's verdict (and each day rollup's),
the last hour audited, the mismatches, and the hour through which every hour was audited (which
compaction waits for)."""

from __future__ import annotations

from redis.typing import EncodableT, FieldT

from contract.buckets import is_day_token
from contract.hours import hour_token, parse_hour_token
from contract.keys import Keys
from deploy.projections_client import ProjectionsClient
from projector.audit.verdict import DayAudit, HourAudit, Verdict

FINAL = (Verdict.OK.value, Verdict.MISMATCH.value)
"""Verdicts that end an hour's turn: a PENDING or UNREADABLE hour is audited again."""


class Records:
    def __init__(self, redis: ProjectionsClient, keys: Keys) -> None:
        self.redis, self.keys = redis, keys

    async def save(self, audit: HourAudit, at_ms: int, messages: int = 0) -> None:
        """The hour's result; `messages`: how many the log held of the hour when it was audited (more
        later, and the hour is audited again)."""
        fields: dict[FieldT, EncodableT] = {
            "hour": hour_token(audit.hour),
            "verdict": audit.verdict.value,
            "at": at_ms,
            "messages": messages,
            "line": audit.line(),
        }
        if audit.parts:
            fields["log"] = "clicks={} impressions={} uniques~{}".format(*audit.totals("log"))
            fields["served"] = "clicks={} impressions={} uniques~{}".format(*audit.totals("served"))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.audit_hour(audit.hour))
            pipe.hset(self.keys.audit_hour(audit.hour), mapping=fields)
            pipe.hset(self.keys.audit_last, mapping=fields)
            if audit.verdict is Verdict.MISMATCH:
                pipe.zadd(self.keys.audit_mismatches, {hour_token(audit.hour): at_ms})
            else:
                pipe.zrem(self.keys.audit_mismatches, hour_token(audit.hour))
            await pipe.execute()

    async def save_day(self, audit: DayAudit, at_ms: int) -> str | None:
        """A day rollup's result, recorded like an hour's (a mismatch among the mismatches); the
        verdict it had before (None: never checked)."""
        fields: dict[FieldT, EncodableT] = {
            "day": audit.token,
            "verdict": audit.verdict.value,
            "at": at_ms,
            "line": audit.line(),
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(self.keys.audit_day(audit.token), "verdict")
            pipe.delete(self.keys.audit_day(audit.token))
            pipe.hset(self.keys.audit_day(audit.token), mapping=fields)
            if audit.verdict is Verdict.MISMATCH:
                pipe.zadd(self.keys.audit_mismatches, {audit.token: at_ms})
            else:
                pipe.zrem(self.keys.audit_mismatches, audit.token)
            before, *_ = await pipe.execute()
        return before.decode() if isinstance(before, bytes) else before

    async def unaudited(self, counts: dict[int, int]) -> list[int]:
        """Of these hours (-> messages the log holds of each), those without a final verdict, or
        with more messages now than when audited (late events), oldest first."""
        hours = sorted(counts)
        async with self.redis.pipeline(transaction=False) as pipe:
            for hour in hours:
                pipe.hmget(self.keys.audit_hour(hour), "verdict", "messages")
            found = await pipe.execute()
        out = []
        for hour, (verdict, messages) in zip(hours, found, strict=True):
            final = verdict is not None and verdict.decode() in FINAL
            if not final or int(messages or 0) < counts[hour]:
                out.append(hour)
        return out

    async def verdict(self, hour: int) -> str | None:
        raw = await self.redis.hget(self.keys.audit_hour(hour), "verdict")
        return raw.decode() if isinstance(raw, bytes) else raw

    async def claim(self, hour: int, owner: str, ttl_ms: int) -> bool:
        return bool(await self.redis.set(self.keys.audit_claim(hour), owner, nx=True, px=ttl_ms))

    async def release(self, hour: int, owner: str) -> None:
        # Only our own claim: a claim that expired may be another process's by now.
        if await self.redis.get(self.keys.audit_claim(hour)) == owner.encode():
            await self.redis.delete(self.keys.audit_claim(hour))

    async def through(self) -> int | None:
        return await audited_through(self.redis, self.keys)

    async def raise_through(self, hour: int) -> None:
        await self.redis.zadd(self.keys.audit_through, {"hour": hour}, gt=True)


async def audited_through(redis: ProjectionsClient, keys: Keys) -> int | None:
    """The hour through which every hour the log held was audited (None: none yet)."""
    score = await redis.zscore(keys.audit_through, "hour")
    return None if score is None else int(score)


async def summary(redis: ProjectionsClient, keys: Keys, mismatches: int = 10) -> list[str]:
    """What `./just inspect` shows of the audit: through where, the last hour audited, the last
    mismatches."""
    through = await audited_through(redis, keys)
    last = await redis.hget(keys.audit_last, "line")
    found = await redis.zrevrange(keys.audit_mismatches, 0, mismatches - 1)
    lines = ["audit:"]
    lines.append(f"  audited through hour {hour_token(through) if through is not None else '(none yet)'}")
    lines.append(f"  last: {last.decode() if isinstance(last, bytes) else '(no hour audited yet)'}")
    if not found:
        lines.append("  no mismatch found")
    for token in (t.decode() if isinstance(t, bytes) else str(t) for t in found):
        key = keys.audit_day(token) if is_day_token(token) else keys.audit_hour(parse_hour_token(token))
        line = await redis.hget(key, "line")
        lines.append(f"  MISMATCH {line.decode() if isinstance(line, bytes) else token}")
    return lines
