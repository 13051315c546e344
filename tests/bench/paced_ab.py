"""`./just bench-ab`: two Hourglass HTTP servers side by side, differing only in the ANALYTICS_*
settings given, under the same paced wrk load in alternating rounds; prints each round's rate,
p50 and p99 and the median p99 of each.

For example, two publishes in flight per subject against one:
`./just bench-ab --a ANALYTICS_PUBLISH_MAX_IN_FLIGHT=1 --b ANALYTICS_PUBLISH_MAX_IN_FLIGHT=2`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

from contract.hours import system_now_ms
from tests.bench.run import (
    GET_LUA,
    PACED_CONNECTIONS,
    POST_LUA,
    WrkResult,
    ensure_wrk,
    pace,
    process,
    run_wrk,
    wait_http,
)
from tests.bench.servers import scratch_servers
from tests.helpers import settings_env
from tests.ports import free_port


def main() -> None:
    parser = argparse.ArgumentParser(prog="./just bench-ab", description=__doc__)
    parser.add_argument("--a", nargs="*", default=[], help="KEY=VALUE settings of server A")
    parser.add_argument("--b", nargs="*", default=[], help="KEY=VALUE settings of server B")
    parser.add_argument("--post-rps", type=float, default=4000)
    parser.add_argument("--get-rps", type=float, default=9000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--kinds", default="post,get", help="post, get, or both")
    args = parser.parse_args()
    wrk = ensure_wrk()
    rates = {"post": args.post_rps, "get": args.get_rps}
    kinds = args.kinds.split(",")
    with scratch_servers("hourglass-ab-") as scratch:
        tmp, log = scratch.workdir, scratch.workdir / "log"
        base = scratch.settings.replace(http_workers=1)
        servers = {"A": base.replace(http_port=free_port()), "B": base.replace(http_port=free_port())}
        changes = {"A": dict(kv.split("=", 1) for kv in args.a), "B": dict(kv.split("=", 1) for kv in args.b)}
        now = system_now_ms()
        scripts = {"post": tmp / "post.lua", "get": tmp / "get.lua"}
        scripts["post"].write_text(POST_LUA.replace("{now}", str(now)))
        scripts["get"].write_text(GET_LUA.replace("{now}", str(now)))
        urls = {name: f"http://127.0.0.1:{s.http_port}" for name, s in servers.items()}
        env = settings_env(base)
        subprocess.run([sys.executable, "-m", "projector", "stream"], env=env, check=True, timeout=60)
        with (
            process([sys.executable, "-m", "server"], {**settings_env(servers["A"]), **changes["A"]}, log),
            process([sys.executable, "-m", "server"], {**settings_env(servers["B"]), **changes["B"]}, log),
            process([sys.executable, "-m", "projector", "run"], env, log),
        ):
            for url in urls.values():
                wait_http(url, "/readyz")
            paced = {}
            for kind in kinds:
                for url in urls.values():
                    run_wrk(wrk, url, scripts[kind], 2)
                paced[kind] = pace(wrk, urls["A"], scripts[kind], rates[kind], tmp / f"{kind}-paced.lua")
            results: dict[tuple[str, str], list[WrkResult]] = {}
            for r in range(args.rounds):
                for kind in kinds:
                    for name in ("A", "B") if r % 2 == 0 else ("B", "A"):
                        got = run_wrk(
                            wrk, urls[name], paced[kind], args.seconds, connections=PACED_CONNECTIONS
                        )
                        results.setdefault((name, kind), []).append(got)
    for name in ("A", "B"):
        print(f"{name}: {' '.join(f'{k}={v}' for k, v in changes[name].items()) or 'defaults'}")
    for (name, kind), runs in sorted(results.items(), key=lambda item: (item[0][1], item[0][0])):
        rounds = ", ".join(f"{x.rps:,.0f} req/s {x.p50_ms:.2f}/{x.p99_ms:.2f} ms" for x in runs)
        p99 = statistics.median(x.p99_ms for x in runs)
        print(f"  {kind.upper()} {name}: median p99 {p99:.2f} ms ({rounds})")


if __name__ == "__main__":
    main()
