# Hourglass recipes. Run them through the ./just wrapper, which installs everything first.

set shell := ["bash", "-euo", "pipefail", "-c"]
set positional-arguments

python := ".venv/bin/python"

# List the recipes.
default:
    @just --list

# Run the whole stack in the foreground: nats-server, valkey-server, projector, HTTP server.
[no-exit-message]
up *args:
    @exec {{python}} -m deploy.supervisor "$@"

# The stack on a 3-node JetStream cluster (loopback ports 4222-4224, stream at R3, data in .data/cluster).
[no-exit-message]
cluster-up *args:
    @exec {{python}} -m deploy.supervisor --cluster "$@"

# Lint, format check, type check, then unit and integration tests against real servers (with no arguments, the type check, unit and container tests run beside the other integration tests).
test *args:
    #!/usr/bin/env bash
    set -euo pipefail
    ruff check .
    ruff format --check .
    if [ $# -gt 0 ]; then
        mypy
        exec {{python}} -m pytest "$@"
    fi
    # The type check, the unit tests and the container tests (which mostly wait on podman) run beside
    # the other integration tests, which mostly wait on their servers: CI takes minutes less. Their
    # output follows at the end.
    beside="$(mktemp)"
    trap 'rm -f "$beside"' EXIT
    containers=(tests/integration/test_containers.py tests/integration/test_image_contents.py)
    (mypy && {{python}} -m pytest tests/unit && {{python}} -m pytest "${containers[@]}") > "$beside" 2>&1 &
    unit=$!
    status=0
    {{python}} -m pytest tests/integration "${containers[@]/#/--ignore=}" || status=$?
    unit_status=0
    wait "$unit" || unit_status=$?
    echo "--- mypy, the unit tests and the container tests, run beside the other integration tests:"
    cat "$beside"
    if [ "$unit_status" -ne 0 ]; then echo "mypy, the unit tests or the container tests failed (exit $unit_status)"; fi
    exit $(( status != 0 ? status : unit_status ))

# Only the fast, pure unit tests.
unit *args:
    {{python}} -m pytest tests/unit "$@"

# Rebuild every projection from the stream (zero downtime), against the configured servers.
[no-exit-message]
replay *args:
    @exec {{python}} -m projector replay "$@"

# Create the stream, or apply configuration changes from ANALYTICS_* (retention, replicas); never the partition count.
[no-exit-message]
stream:
    @exec {{python}} -m projector stream

# Start one more projector process against the configured servers.
[no-exit-message]
projector *args:
    @exec {{python}} -m projector run "$@"

# Recount closed hours from the log and compare with what is served; exits 1 on a mismatch (HOUR..., --since ISO, --repair).
[no-exit-message]
audit *args:
    @exec {{python}} -m projector audit "$@"

# Stream state, messages per hour subject, consumer lag, and the last events decoded.
[no-exit-message]
inspect *args:
    @exec {{python}} -m projector inspect "$@"

# The numbers with each row's audit verdict (--from ISO --to ISO [--granularity hour|day] [--tz ZONE] [--by DIMENSION] [--format csv|ndjson] [--out FILE]), or --raw: the retained events as NDJSON for ./just import.
[no-exit-message]
export *args:
    @exec {{python}} -m projector export "$@"

# Send NDJSON or CSV files (.gz too) through POST /analytics/batch, with progress; running it again counts nothing twice.
[no-exit-message]
import *args:
    @exec {{python}} -m ingest import "$@"

# The Valkey cluster's operations: form, node --port P, add URL [--replica-of URL], move --partition N --to URL, rebalance.
[no-exit-message]
valkey-cluster *args:
    @exec {{python}} -m deploy.valkey_cluster "$@"

# Partitions, pauses, kills and power losses under keyed load, each node in a network namespace of its own (needs root): one row per schedule (--schedule NAME, --seconds N, --sync default|always).
faults *args:
    {{python}} -m tests.faults.harness "$@"

# Apply ruff's fixes and formatting.
fmt:
    ruff check --fix .
    ruff format .

# Measure what the strict JetStream durability setting (sync_interval: always) costs.
bench-durability:
    {{python}} -m tests.bench.durability

# Redis memory of idempotency dedup after replaying 1M keyed events, default window against a 1 s one.
bench-dedup *args:
    {{python}} -m tests.bench.dedup_memory "$@"

# What the audit costs: hours a minute and CPU share, at full speed and under its CPU-share cap.
bench-audit *args:
    {{python}} -m tests.bench.audit_cost "$@"

# Reading the log through a durable consumer with acks against an ephemeral one without.
bench-consumers *args:
    {{python}} -m tests.bench.consumers "$@"

# Re-pin every dependency, with hashes, into requirements.lock (./just installs from it).
lock:
    uv pip compile --system-certs pyproject.toml --extra dev --extra build --generate-hashes --python-version 3.11 --universal -o requirements.lock

# Two HTTP servers differing only in the settings given (--a K=V, --b K=V), under the same paced load.
bench-ab *args:
    {{python}} -m tests.bench.paced_ab "$@"

# Events/s through POST /analytics/batch (1,000-event batches) against single POSTs, same run, one HTTP worker, with each engine's CPU per event.
bench-batch *args:
    {{python}} -m tests.bench.batch "$@"

# One Hourglass under paced POSTs (--rate, --seconds), and where the CPU went meanwhile.
bench-tail *args:
    {{python}} -m tests.bench.tail "$@"

# Projector processes from a cold start, then replays, on a generated live-shaped stream: CPU per event of each engine (--events, --per-message, --projectors, --replay-processes; --base REV replays another commit back to back, --against-no-dimensions this one without ANALYTICS_DIMENSIONS).
bench-projector *args:
    {{python}} -m tests.bench.projector_speed "$@"

# What one of each engine handles here (JetStream R1/R3, Redis with the apply script), for docs/scaling.md.
bench-components *args:
    {{python}} -m tests.bench.components "$@"

# From a POST's 204 to the push on /analytics/live: p50 and p99.
bench-live *args:
    {{python}} -m tests.bench.live "$@"

# One stream projected into one Valkey node and into clusters of 2 and 3 primaries: events/s, Redis CPU per event, GET and range p50/p99 and their ratios to one node.
bench-cluster *args:
    {{python}} -m tests.bench.cluster "$@"

# History at scale: Redis memory with and without the hot window, FLUSHALL to exact, cold-read latency.
bench-history *args:
    {{python}} -m tests.bench.history "$@"

# Hourglass against bare Litestar and raw ASGI with wrk (throughput, latency, freshness, durable mode, projector, replay, RSS), written to docs/benchmarks.md.
bench *args:
    {{python}} -m tests.bench.run "$@"

# Refresh docs/dashboard.png on purpose: the browser test, saving its screenshot there.
screenshot:
    HOURGLASS_SCREENSHOT="$PWD/docs/dashboard.png" {{python}} -m pytest -q tests/integration/test_dashboard_browser.py -k real_numbers

# Another commit's HTTP server against this checkout's in alternating wrk rounds: median POST and GET rates and their ratio (--base REV, --rounds, --seconds).
bench-commits *args:
    {{python}} -m tests.bench.commits "$@"

# Range reads over a year in UTC, Kolkata, Kathmandu (the issue's ratios), current-hour GET vs --base, busy-hour bytes.
bench-ranges *args:
    {{python}} -m tests.bench.ranges "$@"

# How long one script holds Redis at the documented limits (SLOWLOG): range reads in steps and in one script, a replay fetch's apply.
bench-scripts *args:
    {{python}} -m tests.bench.script_time "$@"

# Build the Hourglass image offline with podman (its Debian base made by mmdebstrap), and say how big it is.
[no-exit-message]
image *args:
    @exec {{python}} -m deploy.image "$@"

# Run podman-compose with this machine's podman settings, e.g. ./just compose -f deploy/compose.cluster.yaml up -d.
[no-exit-message]
compose *args:
    @PATH="$PATH:/usr/sbin:/sbin" CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/deploy/containers.conf}" exec .venv/bin/podman-compose "$@"

# What breakdowns cost: a busy hour with and without dimensions (events/s, Redis CPU, memory per value), the bound under a flood, and breakdown reads over a day of 10,000 campaigns.
bench-dimensions *args:
    {{python}} -m tests.bench.dimensions "$@"
