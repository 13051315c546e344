"""Credentials of the local stack: generated once under `$ANALYTICS_DATA_DIR/secrets/`, one NATS user and
one Redis ACL user per role, each allowed only what its role needs.

The directory is 0700 and every file 0600. Passwords live in the role URL files themselves
(`nats-<role>.url`, `redis-<role>.url`), so they stay the same across restarts while the ports in the
URLs follow the settings. Nothing here is ever written into the repository.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from contract.hours import changes_subject
from contract.stream import snapshot_bucket
from deploy.servers import NATS_CONF, durable_nats_conf
from deploy.settings import Settings

NATS_ROLES = ("admin", "ingest", "api", "projector", "audit")
REDIS_ROLES = ("admin", "projector", "api", "audit")


@dataclass(frozen=True, slots=True)
class Secrets:
    directory: Path
    nats: dict[str, str]
    """Role -> password."""
    redis: dict[str, str]

    def nats_url(self, role: str, host: str, port: int) -> str:
        return f"nats://{role}:{self.nats[role]}@{host}:{port}"

    def redis_url(self, role: str, host: str, port: int) -> str:
        return f"redis://{role}:{self.redis[role]}@{host}:{port}/0"


def secrets_dir(data_dir: Path) -> Path:
    return data_dir / "secrets"


def ensure_secrets(data_dir: Path) -> Secrets:
    """The stack's credentials, generated on the first call and read back on every later one."""
    directory = secrets_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    return Secrets(
        directory,
        {role: _password(directory / f"nats-{role}.url") for role in NATS_ROLES},
        {role: _password(directory / f"redis-{role}.url") for role in REDIS_ROLES},
    )


def _password(url_file: Path) -> str:
    if url_file.exists():
        found = urlsplit(url_file.read_text().strip()).password
        if found:
            return found
    return secrets.token_urlsafe(24)  # URL-safe: it goes into URLs and config files unquoted


def write_urls(
    found: Secrets,
    nats_port: int,
    redis_port: int,
    nats_host: str = "127.0.0.1",
    redis_host: str = "127.0.0.1",
) -> None:
    """The role URL files, for the processes, the recipes and `nats --server "$(cat ...)"`."""
    for role in NATS_ROLES:
        url = found.nats_url(role, nats_host, nats_port)
        write_secret(found.directory / f"nats-{role}.url", url + "\n")
    for role in REDIS_ROLES:
        url = found.redis_url(role, redis_host, redis_port)
        write_secret(found.directory / f"redis-{role}.url", url + "\n")


def write_secret(path: Path, text: str) -> None:
    """Created 0600 from the start: never readable by others, not even for a moment."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.chmod(0o600)


def master_auth_file(directory: Path, user: str, password: str) -> Path:
    """A 0600 config file with what a Valkey cluster's replicas sign in to their primary as, kept off
    the command line."""
    path = directory / "valkey-replication.conf"
    write_secret(path, f"masteruser {user}\nmasterauth {password}\n")
    return path


def nats_permissions(*stacks: Settings) -> dict[str, dict[str, list[str]]]:
    """What each role may publish and subscribe to, for these streams (usually one)."""
    merged: dict[str, dict[str, list[str]]] = {}
    for settings in stacks:
        for role, allowed in _permissions(settings).items():
            into = merged.setdefault(role, {"publish": [], "subscribe": []})
            for direction, subjects in allowed.items():
                into[direction] += [s for s in subjects if s not in into[direction]]
    return merged


def _permissions(settings: Settings) -> dict[str, dict[str, list[str]]]:
    stream, prefix = settings.stream_name, settings.subject_prefix
    kv = f"KV_{snapshot_bucket(stream)}"
    changes = changes_subject(stream)
    read_snapshots = [
        f"$JS.API.STREAM.INFO.{kv}",
        f"$JS.API.DIRECT.GET.{kv}.>",
        f"$JS.API.STREAM.MSG.GET.{kv}",
    ]
    consume = [f"$JS.API.CONSUMER.*.{name}{tail}" for name in (stream, kv) for tail in ("", ".>")] + [
        f"$JS.API.CONSUMER.{op}.{name}.>" for name in (stream, kv) for op in ("DURABLE.CREATE", "MSG.NEXT")
    ]
    return {
        "ingest": {
            "publish": [f"{prefix}.>", f"$JS.API.STREAM.INFO.{stream}"],
            "subscribe": ["_INBOX.>"],
        },
        "api": {
            "publish": [f"$JS.API.STREAM.INFO.{stream}", *read_snapshots],
            "subscribe": [changes, "_INBOX.>"],
        },
        "audit": {  # reads the stream through its own ephemeral consumers, and the snapshots; no acks
            "publish": [
                f"$JS.API.STREAM.INFO.{stream}",
                f"$JS.API.CONSUMER.CREATE.{stream}",
                f"$JS.API.CONSUMER.CREATE.{stream}.>",
                f"$JS.API.CONSUMER.INFO.{stream}.>",
                f"$JS.API.CONSUMER.DELETE.{stream}.>",
                f"$JS.API.CONSUMER.MSG.NEXT.{stream}.>",
                *read_snapshots,
            ],
            "subscribe": ["_INBOX.>"],
        },
        "projector": {
            "publish": [
                f"$JS.API.STREAM.INFO.{stream}",
                f"$JS.API.STREAM.PURGE.{stream}",  # compaction below the snapshots
                f"$JS.API.STREAM.MSG.GET.{stream}",  # ./just inspect
                f"$JS.API.DIRECT.GET.{stream}.>",
                *consume,
                f"$JS.ACK.{stream}.>",
                f"$JS.ACK.{kv}.>",
                "$JS.FC.>",
                f"hourglass.dead.{stream}.>",
                changes,
                f"$KV.{snapshot_bucket(stream)}.>",
                *read_snapshots,
            ],
            "subscribe": ["_INBOX.>", changes],
        },
    }


def nats_auth_config(found: Secrets, *stacks: Settings) -> str:
    """The `authorization` block: no anonymous access; admin may do anything, the rest their role."""
    users = [f'    {{user: admin, password: "{found.nats["admin"]}"}}']
    for role, allowed in nats_permissions(*stacks).items():
        publish = ", ".join(f'"{s}"' for s in allowed["publish"])
        subscribe = ", ".join(f'"{s}"' for s in allowed["subscribe"])
        users.append(
            f'    {{user: {role}, password: "{found.nats[role]}", permissions: {{'
            f"publish: {{allow: [{publish}]}}, subscribe: {{allow: [{subscribe}]}}}}}}"
        )
    return "authorization {\n  users = [\n" + "\n".join(users) + "\n  ]\n}\n"


def write_nats_config(found: Secrets, settings: Settings, base: Path, *more: Settings) -> Path:
    """A config for nats-server: `base` (nats.conf) included as it is, plus the users (with roles on
    the stream of `settings`, and of `more` stacks sharing the server)."""
    path = found.directory / "nats.conf"
    include = os.path.relpath(base, found.directory)  # nats-server resolves includes relatively
    write_secret(path, f'include "{include}"\n\n{nats_auth_config(found, settings, *more)}')
    return path


CLUSTER_READS = (
    "+command +cluster|info +cluster|nodes +cluster|slots +cluster|shards +cluster|myid +asking +readonly"
)
"""What a cluster client needs to find its way (slot map, redirections) and the start-up checks; the
projector's role has these already."""


def redis_acl(found: Secrets, settings: Settings, *more: Settings) -> str:
    """The ACL file: `default` off. The projector may use any data command on the key prefix, none of
    the dangerous or admin ones (FLUSHALL, KEYS, CONFIG SET, ACL...); the API may only read (a script
    runs with its caller's permissions, so its scripts can only read too); the audit may read the
    projections and write its own results only (`<prefix>:{audit}:*`)."""
    keys = " ".join(f"~{s.key_prefix}:*" for s in (settings, *more))
    audit_keys = " ".join(f"%R~{s.key_prefix}:* %RW~{s.key_prefix}:{{audit}}:*" for s in (settings, *more))
    return "\n".join(
        [
            "user default off",
            f"user admin on >{found.redis['admin']} ~* &* +@all",
            f"user projector on >{found.redis['projector']} resetchannels {keys} +@all -@dangerous -@admin "
            "+info +config|get",
            f"user api on >{found.redis['api']} resetchannels {keys} -@all +@read -@dangerous "
            f"+@transaction +eval +evalsha +script|load +ping {CLUSTER_READS}",
            f"user audit on >{found.redis['audit']} resetchannels {audit_keys} -@all +@read -@dangerous "
            f"+@transaction +ping +hset +del +zadd +zrem +set {CLUSTER_READS}",
            "",
        ]
    )


def write_redis_acl(found: Secrets, settings: Settings, *more: Settings) -> Path:
    path = found.directory / "users.acl"
    write_secret(path, redis_acl(found, settings, *more))
    return path


def nats_cluster_config(
    found: Secrets, settings: Settings, include: str, listen: str, routes: list[str]
) -> str:
    """One cluster node's config: `include` (the base config, relative to this file) as it is, the
    users, and a cluster block whose routes authenticate both ways (a node without the route password
    can neither join nor be joined). `listen` is this node's cluster `host:port`; `routes` the
    `host:port` of every node."""
    auth = f"route:{found.nats['admin']}"
    urls = "\n".join(f"    nats-route://{auth}@{route}" for route in routes)
    return (
        f'include "{include}"\n\n{nats_auth_config(found, settings)}\n'
        "cluster {\n  name: hourglass\n"
        f"  listen: {listen}\n"
        f'  authorization {{user: route, password: "{found.nats["admin"]}"}}\n'
        f"  routes: [\n{urls}\n  ]\n}}\n"
    )


@dataclass(frozen=True, slots=True)
class Prepared:
    secrets: Secrets
    nats_config: Path
    redis_acl: Path


def prepare(data_dir: Path, settings: Settings, nats_port: int, redis_port: int, *more: Settings) -> Prepared:
    """Everything a local nats-server and valkey-server with users need: the credentials (made once),
    the role URL files for these ports, and the two server configs (roles on `settings`' stream and
    on `more` stacks sharing the servers)."""
    found = ensure_secrets(data_dir)
    write_urls(found, nats_port, redis_port)
    base = durable_nats_conf(data_dir) if settings.nats_sync_always else NATS_CONF
    return Prepared(
        found,
        write_nats_config(found, settings, base, *more),
        write_redis_acl(found, settings, *more),
    )


def main() -> None:
    """`python -m deploy.credentials`: make (or refresh) the credentials and server configs for a deployment
    whose servers this process does not start itself, e.g. the compose example."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m deploy.credentials", description=main.__doc__)
    parser.add_argument("--nats-host", default="127.0.0.1")
    parser.add_argument("--nats-port", type=int, default=4222)
    parser.add_argument("--redis-host", default="127.0.0.1")
    parser.add_argument("--redis-port", type=int, default=6379)
    parser.add_argument("--nats-conf", type=Path, default=None, help="nats.conf as the NATS server sees it")
    parser.add_argument(
        "--cluster-nodes",
        default="",
        help="also write nats-cluster.conf for these comma-separated node hosts (cluster port 6222)",
    )
    parser.add_argument(
        "--cluster-conf", type=Path, default=None, help="nats-cluster.conf as the NATS servers see it"
    )
    parser.add_argument(
        "--valkey-replication",
        action="store_true",
        help="also write valkey-replication.conf, the user a Valkey cluster's replicas sign in as",
    )
    args = parser.parse_args()
    settings = Settings.from_env()
    found = ensure_secrets(settings.data_dir)
    write_urls(found, args.nats_port, args.redis_port, args.nats_host, args.redis_host)
    write_nats_config(found, settings, args.nats_conf or NATS_CONF)
    write_redis_acl(found, settings)
    if args.cluster_nodes:
        base = args.cluster_conf or Path(__file__).with_name("nats-cluster.conf")
        include = os.path.relpath(base, found.directory)
        routes = [f"{host}:6222" for host in args.cluster_nodes.split(",")]
        config = nats_cluster_config(found, settings, include, "0.0.0.0:6222", routes)
        write_secret(found.directory / "nats-cluster.conf", config)
    if args.valkey_replication:
        master_auth_file(found.directory, "admin", found.redis["admin"])
    print(f"credentials in {found.directory}")


if __name__ == "__main__":
    main()
