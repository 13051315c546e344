"""One typed settings object, read from ANALYTICS_* environment variables at the process edge.

The module is long because it is the one place every setting is declared, documented and checked."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import ipaddress
import itertools
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from contract.buckets import day_phases, zone
from contract.schema import dimension_names_problem, pairs_problem
from deploy.backoff import NatsLog
from deploy.redis_nodes import NodeListError, RedisNode, parse_redis_nodes

ENV_PREFIX = "ANALYTICS_"
DEFAULT_PAIRS = "campaign:creative"


class SettingsError(ValueError):
    """An ANALYTICS_* variable could not be parsed."""


@dataclass(frozen=True, slots=True)
class Settings:
    http_host: str = "127.0.0.1"
    """Address the HTTP server binds; use 0.0.0.0 to serve other machines."""

    http_port: int = 8080
    """Port of the HTTP server (POST and GET /analytics, /healthz, /readyz)."""

    http_workers: int = 1
    """HTTP worker processes; `./just up` defaults it to the number of cores."""

    http_idle_timeout_s: float = 10.0
    """A connection that does not finish sending a request's headers within this is closed."""

    http_fast_path: bool = True
    """Answer plain POSTs and GETs of one hour in raw ASGI, before Litestar (same bytes, less work)."""

    http_gc_freeze: bool = True
    """Move what a worker built at start out of the garbage collector's reach (`gc.freeze`), so full
    collections under load are shorter."""

    admin_host: str = "127.0.0.1"
    """Address of the admin port (`/metrics`); keep it private."""

    admin_port: int = 9180
    """Port of `/metrics` for the HTTP process (0 turns it off); the public port answers 404 there."""

    live_max_subscribers: int = 100
    """Live streams (`GET /analytics/live`) one HTTP worker serves at once; more get 503."""

    live_heartbeat_s: float = 15.0
    """A live stream sends a heartbeat comment after this long without a push."""

    read_tokens: str = ""
    """Comma-separated bearer tokens; when any is set (here or in the file), GETs of analytics need one."""

    read_tokens_file: str = ""
    """A file of read tokens, one per line (`#` comments allowed); read at start."""

    post_rate_per_s: float = 0.0
    """Events per second one client address may POST, per HTTP worker (0: no limit); over it, 429."""

    post_burst: int = 50
    """How many POSTs a client may send at once before the rate applies."""

    batch_max_events: int = 10_000
    """The most events one `POST /analytics/batch` may hold; a batch with more is a 413."""

    batch_max_bytes: int = 8 * 1024 * 1024
    """The largest `POST /analytics/batch` body, counted after decompression while it is read; a
    larger one is a 413 as soon as it passes this (a gzip bomb stops early)."""

    trusted_proxies: str = ""
    """Comma-separated addresses or CIDRs of proxies whose X-Forwarded-For names the client."""

    nats_url: str = "nats://127.0.0.1:4222"
    """NATS server(s), comma separated. A loopback URL makes `./just up` run nats-server itself."""

    nats_api_url: str = ""
    """The HTTP process's second NATS connection, for reads (change notices, cold hours) under the
    `api` role; empty: the same as ANALYTICS_NATS_URL."""

    tls_ca_file: str = ""
    """A CA bundle to trust for `tls://` NATS and `rediss://` Redis URLs, beside the system's."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis (or Valkey) URL; several, comma separated, are the nodes of one Redis Cluster. A loopback
    URL makes `./just up` run valkey-server itself."""

    data_dir: Path = Path(".data")
    """Where `./just up` keeps the JetStream store, the Valkey files and logs."""

    stream_name: str = "ANALYTICS"
    """Name of the JetStream stream that is the event log."""

    subject_prefix: str = "analytics.events"
    """Subjects are `<prefix>.<YYYYMMDDHH>.<partition>`; the stream captures `<prefix>.>`."""

    stream_max_age_s: float = 0.0
    """Retention of the event log in seconds; 0 keeps events forever (replay needs them)."""

    stream_max_bytes: int = -1
    """Size cap of the event log in bytes; -1 means no cap."""

    stream_replicas: int = 1
    """JetStream replicas of the stream (3 on a cluster)."""

    nats_sync_always: bool = False
    """Durable mode for the nats-server `./just up` runs: fsync before every PubAck (sync_interval always)."""

    partitions: int = 4
    """Partitions per hour, chosen by a hash of the user; fixed for the life of a stream."""

    key_prefix: str = "hg"
    """Prefix of every Redis key Hourglass writes."""

    publish_timeout_s: float = 2.0
    """How long a POST waits for JetStream's PubAck before it answers 503."""

    dedup_window_s: float = 600.0
    """A retried POST with the same Idempotency-Key within this many seconds counts once."""

    publish_max_batch: int = 1000
    """Group commit: the most events one stream message carries."""

    publish_linger_ms: float = 0.0
    """Group commit: how long a batch waits for company; 0 flushes at the end of the event-loop tick."""

    publish_max_in_flight: int = 1
    """Group commit: appends per subject awaiting their PubAck at once; more events wait and batch up."""

    read_staleness_s: float = 1.0
    """A GET may serve an hour from a worker's memory only if Redis confirmed it this recently."""

    redis_timeout_s: float = 1.0
    """Socket timeout for Redis commands; a GET answers 503 when Redis does not answer in time."""

    redis_wait_replicas: int = 0
    """After each live apply, the projector waits (Redis WAIT) until this many replicas have it; 0 does
    not wait. Narrows what a failover can roll back; exactness does not need it."""

    redis_wait_timeout_ms: int = 100
    """The longest one WAIT blocks an apply when replicas lag or are down (then it goes on regardless);
    below ANALYTICS_REDIS_TIMEOUT_S."""

    future_skew_ms: int = 86_400_000
    """How far in the future a POSTed timestamp may be; refuses microseconds sent by mistake."""

    log_keep_s: float = 604_800.0
    """Raw events stay in the stream at least this long, even when snapshots cover them (7 days)."""

    snapshot_interval_s: float = 60.0
    """How often a projector writes the hours that changed to the snapshot store (0 turns it off)."""

    hot_hours: int = 168
    """Redis holds the current hour and the `hot_hours - 1` before it (and any later ones); older hours
    leave Redis once snapshotted, and reads go through to the snapshot store. 0 keeps every hour."""

    day_zones: str = "UTC"
    """IANA time zones (comma-separated) whose local days are kept as pre-merged day rollups, so a long
    range by day in them reads one cell per day; UTC's always are. Any other zone is read exactly from
    hours and quarter-hours, more slowly. Each zone adds one or two HyperLogLog updates per event.
    A change applies to generations built after it: run a replay."""

    dimensions: str = "campaign,creative,site"
    """The dimensions an event may carry (comma-separated names, [a-z][a-z0-9_]*, at most 16): a POST
    may add `&campaign=spring-sale`, and any other parameter named like a dimension is a 400. Empty:
    none. The log keeps them; a removed one stays in old messages. The projector counts each hour per
    value of each (GET /analytics/breakdown); events without any count once more, in one cell per hour.
    A change applies to generations built after it: run a replay."""

    dimension_pairs: str = DEFAULT_PAIRS
    """Pairs of declared dimensions (comma-separated "first:second", at most 4) kept together, so a
    breakdown by the second can be filtered by a value of the first (`by=creative&campaign=x`). Each
    adds one axis cell per event that carries its first dimension. The default, campaign:creative,
    applies when both are declared; empty: none. A change applies to generations built after it."""

    dimension_max_values: int = 10_000
    """Distinct values of one dimension that get cells of their own per hour and partition; later new
    values count as `(other)` (a metric and one WARNING per hour and dimension). No total changes."""

    range_max_buckets: int = 8784
    """The most buckets (hours or days) one range read may ask for; 8,784 hours is a leap year."""

    retry_after_s: int = 1
    """Retry-After seconds sent with a 503."""

    projector_batch: int = 1000
    """Stream messages one projector fetch asks for (a message holds up to PUBLISH_MAX_BATCH events;
    a fetch also stops at 4 MiB)."""

    lease_ttl_s: float = 3.0
    """A projector's hold on a partition lapses this long after its last renewal (renewed every third)."""

    projector_coalesce_ms: float = 50.0
    """After catching up, a projector waits this long before its next fetch, so applies carry more."""

    projector_metrics_port: int = 0
    """Port of a projector's own /metrics (apply duration, events applied); 0 turns it off."""

    projector_idle_s: float = 1.0
    """How long a projector fetch waits for messages before it checks Redis health."""

    replay_processes: int = 0
    """Processes a full replay folds the log in, each taking some of the partitions; 0: one per core
    (at most one per partition) once the stream holds 100,000 messages, else one."""

    pull_reader: str = "auto"
    """How the projector reads the log: `fast` (hooks into nats-py's parser), `public` (nats-py's public
    API only), or `auto` (fast when the hooked internals are all there, else public with a WARNING)."""

    connect_deadline_s: float = 5.0
    """How long a command (`inspect`, `replay`, `stream`) tries to reach NATS and Redis before it says
    which one it cannot reach and exits."""

    audit_enabled: bool = True
    """Run the continuous audit (`./just up` starts it), and let compaction drop only hours it has audited;
    off: compaction waits for nothing, as before the audit."""

    audit_grace_s: float = 600.0
    """The audit recounts an hour once it has been closed this long (late events land first)."""

    audit_interval_s: float = 10.0
    """How often the continuous audit looks for hours that became due."""

    audit_cpu_share: float = 0.1
    """The most of one core the continuous audit uses: after each hour it sleeps in proportion."""

    audit_metrics_port: int = 0
    """Port of the audit process's /metrics (hours audited, mismatches, last hour); 0 turns it off."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, role: str | None = None) -> Settings:
        """Build settings from ANALYTICS_<FIELD> variables; unknown ANALYTICS_ names are an error.

        With a `role` (`http`, `projector`, `audit`, `admin`), URLs that carry no credentials take the role's
        from `$ANALYTICS_DATA_DIR/secrets/` when `./just up` made them, so every recipe just works."""
        env = os.environ if environ is None else environ
        known = {f.name for f in fields(cls)}
        unknown = sorted(
            k for k in env if k.startswith(ENV_PREFIX) and k[len(ENV_PREFIX) :].lower() not in known
        )
        if unknown:
            raise SettingsError(f"unknown setting(s): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None:
                continue
            values[f.name] = _parse(f.name, raw, type(getattr(cls(), f.name)))
        settings = cls(**values)
        if role is not None:
            settings = settings.with_credentials(role)
        settings.validate()
        return settings

    def with_credentials(self, role: str) -> Settings:
        """The role's credentials from the secrets directory, put into URLs that carry none."""
        nats_role, api_role, redis_role = ROLES[role]
        directory = self.data_dir / "secrets"

        def add(url: str, kind: str, who: str | None) -> str:
            secret = directory / f"{kind}-{who}.url"
            if who is None or not directory.is_dir() or all(urlsplit(u).username for u in url.split(",")):
                return url
            if not secret.exists():  # a mounted Secret missing one key: say which, not NOAUTH later
                raise SettingsError(f"{secret} is missing: the {role} role's {kind} credentials")
            return credentials_into(url, secret.read_text().strip())

        return self.replace(
            nats_url=add(self.nats_url, "nats", nats_role),
            nats_api_url=add(self.nats_api_url or self.nats_url, "nats", api_role)
            if api_role
            else self.nats_api_url,
            redis_url=add(self.redis_url, "redis", redis_role),
        )

    def validate(self) -> None:
        if self.partitions < 1:
            raise SettingsError("ANALYTICS_PARTITIONS must be at least 1")
        if self.http_workers < 1:
            raise SettingsError("ANALYTICS_HTTP_WORKERS must be at least 1")
        if not self.subject_prefix or "*" in self.subject_prefix or ">" in self.subject_prefix:
            raise SettingsError("ANALYTICS_SUBJECT_PREFIX must be a plain subject without wildcards")
        if self.subject_prefix == "hourglass" or self.subject_prefix.startswith("hourglass."):
            raise SettingsError(
                "ANALYTICS_SUBJECT_PREFIX must not be under `hourglass.`: notices and dead letters use it"
            )
        try:
            [
                ipaddress.ip_network(p.strip(), strict=False)
                for p in self.trusted_proxies.split(",")
                if p.strip()
            ]
        except ValueError as exc:
            raise SettingsError(f"ANALYTICS_TRUSTED_PROXIES: {exc}") from None
        if self.post_rate_per_s < 0:
            raise SettingsError("ANALYTICS_POST_RATE_PER_S must be 0 (no limit) or more")
        if self.batch_max_events < 1 or self.batch_max_bytes < 1:
            raise SettingsError("ANALYTICS_BATCH_MAX_EVENTS and ANALYTICS_BATCH_MAX_BYTES must be at least 1")
        if self.hot_hours < 0:
            raise SettingsError("ANALYTICS_HOT_HOURS must be 0 (keep every hour) or more")
        if self.dimension_max_values < 1:
            raise SettingsError("ANALYTICS_DIMENSION_MAX_VALUES must be at least 1")
        if not 0 < self.audit_cpu_share <= 1:
            raise SettingsError("ANALYTICS_AUDIT_CPU_SHARE must be above 0 and at most 1 (one core)")
        if self.redis_wait_replicas < 0:
            raise SettingsError("ANALYTICS_REDIS_WAIT_REPLICAS must be 0 (do not wait) or more")
        if self.redis_wait_timeout_ms < 1:
            raise SettingsError("ANALYTICS_REDIS_WAIT_TIMEOUT_MS must be at least 1 (0 would wait forever)")
        if self.redis_wait_replicas and self.redis_wait_timeout_ms >= self.redis_timeout_s * 1000:
            raise SettingsError("ANALYTICS_REDIS_WAIT_TIMEOUT_MS must be below ANALYTICS_REDIS_TIMEOUT_S")
        for name in self.day_zone_names:
            try:
                zone(name)
            except ValueError as exc:
                raise SettingsError(f"ANALYTICS_DAY_ZONES: {exc}") from None
        problem = dimension_names_problem(self.dimension_names)
        if problem is not None:
            raise SettingsError(f"ANALYTICS_DIMENSIONS={self.dimensions!r}: {problem}")
        problem = pairs_problem(self.dimension_pair_names, self.dimension_names)
        if problem is not None and self.dimension_pairs != DEFAULT_PAIRS:
            raise SettingsError(f"ANALYTICS_DIMENSION_PAIRS={self.dimension_pairs!r}: {problem}")
        if self.pull_reader not in ("auto", "fast", "public"):
            raise SettingsError("ANALYTICS_PULL_READER must be auto, fast or public")
        self.redis_nodes()

    def redis_nodes(self) -> tuple[RedisNode, ...]:
        """The nodes ANALYTICS_REDIS_URL lists (empty for one URL that is not redis[s]://)."""
        try:
            return parse_redis_nodes(self.redis_url)
        except NodeListError as exc:
            raise SettingsError(str(exc)) from None

    @property
    def day_zone_names(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.day_zones.split(",") if name.strip())

    @property
    def dimension_names(self) -> tuple[str, ...]:
        """The declared dimensions, in the order ANALYTICS_DIMENSIONS names them."""
        return tuple(name.strip() for name in self.dimensions.split(",") if name.strip())

    @property
    def dimension_pair_names(self) -> tuple[tuple[str, str], ...]:
        """The declared pairs (first, second), in the order ANALYTICS_DIMENSION_PAIRS names them; the
        default's only when both of its dimensions are declared."""
        pairs = []
        for item in self.dimension_pairs.split(","):
            first, _, second = item.strip().partition(":")
            if first or second:
                pairs.append((first.strip(), second.strip()))
        if self.dimension_pairs == DEFAULT_PAIRS and pairs_problem(tuple(pairs), self.dimension_names):
            return ()
        return tuple(pairs)

    @property
    def day_phases(self) -> tuple[int, ...]:
        """The day rollups a generation built with these settings keeps (contract.buckets)."""
        return day_phases(self.day_zone_names)

    @property
    def redis_cluster(self) -> bool:
        """Several nodes listed: the projections live on a Redis Cluster."""
        return len(self.redis_nodes()) > 1

    @property
    def http_url(self) -> str:
        """Where a command on this machine reaches the HTTP server (a wildcard bind via loopback)."""
        host = "127.0.0.1" if self.http_host in ("0.0.0.0", "::", "") else self.http_host
        return f"http://{host}:{self.http_port}"

    def nats_read_options(self, name: str) -> dict[str, Any]:
        """Like `nats_options`, for the HTTP process's reading connection."""
        return self.nats_options(name, self.nats_api_url or self.nats_url)

    def tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if self.tls_ca_file:
            context.load_verify_locations(cafile=self.tls_ca_file)
        return context

    def nats_options(self, name: str, url: str = "") -> dict[str, Any]:
        """Keyword arguments for `nats.connect` (to `url`, by default ANALYTICS_NATS_URL): reconnect
        forever, fail a connect attempt fast, one log line per failed try (deploy.backoff.NatsLog)."""
        tls = {"tls": self.tls_context()} if "tls://" in self.nats_url or self.tls_ca_file else {}
        url = url or self.nats_url
        return {
            **tls,
            **NatsLog(name, redacted(url)).options(),
            **nats_servers(url),
            "name": name,
            "connect_timeout": 2,
            "reconnect_time_wait": 0.5,
            "max_reconnect_attempts": -1,
            "allow_reconnect": True,
        }

    def redis_options(self) -> dict[str, Any]:
        """Keyword arguments for `Redis.from_url`: time out rather than hang."""
        return {
            "url": self.redis_url,
            "socket_timeout": self.redis_timeout_s,
            "socket_connect_timeout": self.redis_timeout_s,
            "health_check_interval": 10,
            **(
                {"ssl_ca_certs": self.tls_ca_file}
                if self.tls_ca_file and self.redis_url.startswith("rediss")
                else {}
            ),
        }

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def as_env(self) -> dict[str, str]:
        """The ANALYTICS_* variables that `from_env` reads back into exactly these settings."""
        return {f"{ENV_PREFIX}{f.name.upper()}": str(getattr(self, f.name)) for f in fields(self)}


def _parse(name: str, raw: str, kind: type) -> Any:
    try:
        if kind is bool:
            return raw.strip().lower() in {"1", "true", "yes", "on"}
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if issubclass(kind, Path):
            return Path(raw)
        return raw
    except ValueError as exc:
        raise SettingsError(f"{ENV_PREFIX}{name.upper()}={raw!r}: {exc}") from exc


def field_docs() -> dict[str, str]:
    """Each field's docstring, for the README's config table and `--help` texts."""
    tree = ast.parse(inspect.getsource(Settings))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
        ):
            docs[node.target.id] = str(after.value.value)
    return docs


ROLES: dict[str, tuple[str, str | None, str | None]] = {
    "http": ("ingest", "api", "api"),
    "projector": ("projector", None, "projector"),
    "admin": ("admin", None, "admin"),
    "audit": ("audit", None, "audit"),
}
"""Process role -> (its NATS user, its reading NATS user, its Redis user)."""


def credentials_into(url: str, secret_url: str) -> str:
    """`url` (one or more, comma separated) with the user and password of `secret_url`, unless it
    carries its own."""
    found = urlsplit(secret_url)
    if not found.username:
        return url
    userinfo = f"{found.username}:{found.password}@" if found.password else f"{found.username}@"
    out = []
    for one in url.split(","):
        parts = urlsplit(one)
        if parts.username or not parts.netloc:
            out.append(one)
        else:
            out.append(urlunsplit(parts._replace(netloc=userinfo + parts.netloc)))
    return ",".join(out)


def nats_servers(url: str) -> dict[str, Any]:
    """`servers` for `nats.connect`, with the credentials of ANALYTICS_NATS_URL passed as `user` and
    `password` (or `token`) instead. nats-py sends a URL's own credentials only to that URL, and the
    servers a cluster advertises join the pool without any, so a reconnect to one of them would be
    refused with 'Authorization Violation'."""
    urls = url.split(",")
    parts = [urlsplit(one) for one in urls]
    userinfo = {(p.username, p.password) for p in parts}
    if len(userinfo) != 1 or next(iter(userinfo))[0] is None:
        return {"servers": urls}  # no credentials, or different ones per server: left to nats-py
    user, password = next(iter(userinfo))
    bare = [urlunsplit(p._replace(netloc=p.netloc.rpartition("@")[2])) for p in parts]
    auth = {"user": user, "password": password} if password is not None else {"token": user}
    return {"servers": bare, **auth}


def redacted(url: str) -> str:
    """A URL (or several) fit for logs: any password replaced by `***`."""
    out = []
    for one in url.split(","):
        parts = urlsplit(one)
        if parts.password:
            host = parts.netloc.rpartition("@")[2]
            one = urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
        out.append(one)
    return ",".join(out)
