"""`python -m projector audit`: audit hours once, then the day rollups holding them, and print a line each
(exit 1 on any mismatch); with `--repair` rebuild each mismatched hour from the log (and a mismatched day
rollup from its components) and audit it again; `--follow` keeps auditing."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from nats.aio.client import Client as NATS

from contract.hours import hour_end, hour_of, parse_hour_token, system_now_ms
from contract.keys import Keys
from deploy.projections_client import ProjectionsClient
from deploy.settings import Settings, SettingsError
from projector.audit.auditor import Auditor, hours_in_log
from projector.audit.follow import follow
from projector.audit.records import Records, summary
from projector.audit.verdict import DayAudit, HourAudit, Verdict
from projector.cli.export_command import ExportError, moment_ms
from projector.projections.hot_window import rebuild_day_thawing
from projector.projections.store import DayOutcome, ProjectionStore
from projector.reach import Unreachable, reach_nats, reach_redis
from projector.replay.reports import ReplayRefused
from projector.replay.single_hour import replay_hour

log = logging.getLogger("audit")


@dataclass
class AuditArgs:
    hours: list[str] = field(default_factory=list)
    since: str | None = None
    repair: bool = False
    follow: bool = False


def since_hour(raw: str) -> int:
    """The hour of an ISO-8601 moment (UTC when it names no zone)."""
    try:
        return hour_of(moment_ms(raw, UTC))
    except ExportError:
        raise SettingsError(
            f"--since must be an ISO-8601 time such as 2026-11-25T14:00Z, got {raw!r}"
        ) from None


def chosen_hours(args: AuditArgs) -> list[int] | None:
    """The hours named on the command line (None: every closed hour the log holds)."""
    try:
        return sorted({parse_hour_token(h) for h in args.hours}) if args.hours else None
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


async def audit_command(args: AuditArgs, stop: asyncio.Event) -> int:
    named = chosen_hours(args)
    since = since_hour(args.since) if args.since else None
    if args.follow:
        settings = Settings.from_env(role="audit")
        return await follow(settings, stop)
    # A repair rebuilds hours, which only the projector's role may write; an audit alone only reads.
    settings = Settings.from_env(role="projector" if args.repair else "audit")
    nc = await reach_nats(settings, "hourglass-audit", settings.connect_deadline_s)
    try:
        redis = await reach_redis(settings, settings.connect_deadline_s)
        try:
            return await _audit_once(settings, nc, redis, named, since, args.repair)
        finally:
            await redis.aclose()
    finally:
        await nc.close()


async def _audit_once(
    settings: Settings,
    nc: NATS,
    redis: ProjectionsClient,
    named: list[int] | None,
    since: int | None,
    repair: bool,
) -> int:
    auditor = await Auditor.open(settings, nc, redis)
    if named is None:
        now = datetime.fromtimestamp(system_now_ms() / 1000, tz=UTC)
        named = [h for h in await hours_in_log(nc, settings) if hour_end(h) <= now]
    if since is not None:
        named = [h for h in named if h >= since]
    if not named:
        print("no closed hour in the log to audit")
        return 0
    bad = 0
    # Recorded as the continuous audit records its own (what `./just export` and inspect show); with
    # no message count, so the continuous audit, when it runs, checks each hour again itself.
    records = Records(redis, Keys(settings.key_prefix))
    for hour in named:
        found = await auditor.hour(hour)
        print(found.line(), flush=True)
        if found.verdict is Verdict.MISMATCH and repair:
            found = await _repair(settings, nc, redis, auditor, hour)
        await records.save(found, system_now_ms())
        bad += found.verdict in (Verdict.MISMATCH, Verdict.UNREADABLE)
    print(f"{len(named)} hour(s) audited, {bad} mismatched")
    # After the hours: repairing an hour rebuilds its day rollups, which are audited next.
    bad += await _audit_days(settings, redis, auditor, named, repair)
    return 1 if bad else 0


async def _audit_days(
    settings: Settings, redis: ProjectionsClient, auditor: Auditor, hours: list[int], repair: bool
) -> int:
    """The day rollups holding `hours` against their components, a line each: how many mismatch."""
    tokens = await auditor.days(hours)
    if not tokens:
        return 0
    bad = 0
    for token in tokens:
        found = await auditor.day(token)
        print(found.line(), flush=True)
        if found.verdict is Verdict.MISMATCH and repair:
            found = await _repair_day(settings, redis, auditor, found)
        bad += found.verdict is Verdict.MISMATCH
    print(f"{len(tokens)} day rollup(s) audited, {bad} mismatched")
    return bad


async def _repair_day(
    settings: Settings, redis: ProjectionsClient, auditor: Auditor, found: DayAudit
) -> DayAudit:
    """Each mismatched partition's rollup rebuilt from its components (ProjectionStore.rebuild_day,
    thawing cold ones first), then the rollup audited again."""
    store = ProjectionStore.from_settings(redis, settings)
    for part in found.parts:
        if not part.differs:
            continue
        gen = await store.current_generation(part.partition)
        try:
            outcome = await rebuild_day_thawing(store, auditor.snapshots, gen, part.partition, found.token)
        except RuntimeError as exc:  # a cold component's entry is gone: said in one line, not a traceback
            print(f"    repair of p{part.partition} refused: {exc}")
            continue
        if outcome is not DayOutcome.REBUILT:
            print(f"    repair of p{part.partition} refused: {outcome.name.lower().replace('_', ' ')}")
    again = await auditor.day(found.token)
    print(f"    rebuilt from its components; audited again: {again.line()}", flush=True)
    return again


async def _repair(
    settings: Settings, nc: NATS, redis: ProjectionsClient, auditor: Auditor, hour: int
) -> HourAudit:
    try:
        report = await replay_hour(settings, nc, redis, hour)
    except ReplayRefused as exc:
        print(f"    repair refused: {exc}")
        return await auditor.hour(hour)
    again = await auditor.hour(hour)
    print(f"    rebuilt from {report.events} events; audited again: {again.line()}", flush=True)
    return again


async def audit_view(settings: Settings) -> str:
    """The audit's last results for `./just inspect`, from Redis."""
    try:
        redis = await reach_redis(settings, settings.connect_deadline_s)
    except Unreachable as exc:
        return f"\naudit: {exc.line}\n"
    try:
        return "\n" + "\n".join(await summary(redis, Keys(settings.key_prefix))) + "\n"
    finally:
        await redis.aclose()
