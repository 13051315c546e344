"""Two commits' HTTP servers on the same NATS and Valkey, under the same wrk load in alternating rounds:
`python -m tests.bench.revs_ab BASE [NEW] [--rounds N] [--seconds S]` (NEW defaults to the working tree).

For a change that must not cost speed: each commit is extracted with `git archive` and served by
`python -m server` (one worker) with that tree first on PYTHONPATH; the order alternates every round."""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from contract.hours import system_now_ms
from contract.settings import Settings
from deploy.servers import ROOT, free_port, nats_command, valkey_command, wait_for_port
from tests.bench.run import GET_LUA, POST_LUA, ensure_wrk, process, run_wrk, wait_http, wait_post
from tests.helpers import settings_env


def extract(rev: str, into: Path) -> Path:
    into.mkdir()
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("base")
    parser.add_argument("new", nargs="?", help="a commit; default: the working tree")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    wrk = ensure_wrk()
    with tempfile.TemporaryDirectory(prefix="hourglass-revs-") as tmp_s:
        tmp = Path(tmp_s)
        trees = {
            args.base: extract(args.base, tmp / "base"),
            args.new or "working tree": extract(args.new, tmp / "new") if args.new else ROOT,
        }
        (tmp / "nats").mkdir()
        (tmp / "valkey").mkdir()
        nats_port, redis_port = free_port(), free_port()
        base = Settings(
            nats_url=f"nats://127.0.0.1:{nats_port}",
            redis_url=f"redis://127.0.0.1:{redis_port}/0",
            admin_port=0,
            http_workers=1,
            data_dir=tmp,
        )
        now = system_now_ms()
        scripts = {"post": tmp / "post.lua", "get": tmp / "get.lua"}
        scripts["post"].write_text(POST_LUA.replace("{now}", str(now)))
        scripts["get"].write_text(GET_LUA.replace("{now}", str(now)))
        log = tmp / "log"
        with (
            process(nats_command(nats_port, tmp / "nats"), None, log),
            process(valkey_command(redis_port, tmp / "valkey"), None, log),
        ):
            wait_for_port("127.0.0.1", nats_port, 20)
            wait_for_port("127.0.0.1", redis_port, 20)
            subprocess.run([sys.executable, "-m", "projector", "stream"], env=settings_env(base), check=True)
            urls: dict[str, str] = {}
            with contextlib.ExitStack() as servers:
                for name, tree in trees.items():
                    settings = base.replace(http_port=free_port())
                    env = {**settings_env(settings), "PYTHONPATH": str(tree)}
                    servers.enter_context(process([sys.executable, "-m", "server"], env, log))
                    urls[name] = f"http://127.0.0.1:{settings.http_port}"
                _rounds(wrk, urls, scripts, now, args.rounds, args.seconds)


def _rounds(
    wrk: str, urls: dict[str, str], scripts: dict[str, Path], now: int, rounds: int, seconds: int
) -> None:
    for url in urls.values():
        wait_post(url, now)
        wait_http(url, f"/analytics?timestamp={now}")
        for script in scripts.values():
            run_wrk(wrk, url, script, 2)  # warm-up
    names = list(urls)
    found: dict[tuple[str, str], list[float]] = {}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for kind, script in scripts.items():
            for name in order:
                rps = run_wrk(wrk, urls[name], script, seconds).rps
                found.setdefault((name, kind), []).append(rps)
                print(f"round {r + 1} {kind.upper():4} {name:<14} {rps:>9,.0f} req/s", flush=True)
    for kind in scripts:
        a, b = (statistics.median(found[name, kind]) for name in names)
        print(f"{kind.upper():4} medians: {names[0]} {a:,.0f}  {names[1]} {b:,.0f}  ratio {b / a:.3f}")


if __name__ == "__main__":
    main()
