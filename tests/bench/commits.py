"""`./just bench-commits --base REV`: the HTTP server of another commit against this checkout's, on the
same nats-server, valkey-server and projector, under the same unpaced wrk load in alternating rounds;
prints each side's median POST and GET rate and their ratio.

It answers "did this change cost speed?" in one run: both servers share the machine's noise, and the
order of the two flips every round. The other commit is checked out with `git worktree` into a
temporary directory and imported from there (`PYTHONPATH`), with this checkout's virtualenv.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from contract.hours import system_now_ms
from deploy.servers import ROOT
from tests.bench.run import GET_LUA, POST_LUA, WrkResult, ensure_wrk, process, run_wrk, wait_http
from tests.bench.servers import scratch_servers
from tests.helpers import settings_env
from tests.ports import free_port


@contextmanager
def checkout(rev: str) -> Iterator[Path]:
    """`rev`'s tree in a temporary worktree, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="hourglass-rev-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev], check=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(prog="./just bench-commits", description=__doc__)
    parser.add_argument("--base", required=True, help="the commit to compare this checkout with")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=5, help="duration of one wrk round")
    parser.add_argument(
        "--head-query",
        default="",
        help="appended to this checkout's POSTs only (e.g. '&campaign=spring-sale&creative=c12&site=x.com': "
        "POST with dimensions here against POST without at --base)",
    )
    args = parser.parse_args()
    wrk = ensure_wrk()
    with scratch_servers("hourglass-commits-") as scratch, checkout(args.base) as base_tree:
        tmp, log = scratch.workdir, scratch.workdir / "log"
        settings = scratch.settings.replace(http_workers=1)
        ports = {"base": free_port(), "head": free_port()}
        trees = {"base": base_tree, "head": ROOT}
        now = system_now_ms()
        scripts = {"post": tmp / "post.lua", "get": tmp / "get.lua"}
        scripts["post"].write_text(POST_LUA.replace("{now}", str(now)))
        scripts["get"].write_text(GET_LUA.replace("{now}", str(now)))
        head_post = tmp / "post-head.lua"
        extra = args.head_query.replace("\\", "").replace('"', "")
        head_post.write_text(
            POST_LUA.replace("{now}", str(now)).replace(".. kind)", f'.. kind .. "{extra}")')
        )
        script_of = {("base", "post"): scripts["post"], ("head", "post"): head_post}
        env = settings_env(settings)
        subprocess.run([sys.executable, "-m", "projector", "stream"], env=env, check=True, timeout=60)
        servers = [
            tree_server(trees[name], {**settings_env(settings.replace(http_port=port))}, log)
            for name, port in ports.items()
        ]
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        with servers[0], servers[1], process([sys.executable, "-m", "projector", "run"], env, log):
            try:
                for url in urls.values():
                    wait_http(url, "/readyz")
            except TimeoutError:
                print(log.read_text()[-3000:], file=sys.stderr)
                raise
            for name, url in urls.items():  # warm-up: caches, connections, the first batches
                for kind in scripts:
                    run_wrk(wrk, url, script_of.get((name, kind), scripts[kind]), 2)
            results: dict[tuple[str, str], list[WrkResult]] = {}
            for r in range(args.rounds):
                for kind in ("post", "get"):
                    for name in ("base", "head") if r % 2 == 0 else ("head", "base"):
                        got = run_wrk(
                            wrk, urls[name], script_of.get((name, kind), scripts[kind]), args.seconds
                        )
                        results.setdefault((name, kind), []).append(got)
                        print(f"  round {r + 1} {kind.upper():4} {name:4} {got.rps:>9,.0f} req/s", flush=True)
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], text=True, capture_output=True
    )
    print(f"base {args.base} against this checkout ({head.stdout.strip()}, uncommitted changes included):")
    if args.head_query:
        print(f"  this checkout's POSTs carry {args.head_query!r}")
    for kind in ("post", "get"):
        med = {name: statistics.median(x.rps for x in results[name, kind]) for name in ports}
        failures = sum(x.failures for name in ports for x in results[name, kind])
        print(
            f"  {kind.upper():4} base {med['base']:>9,.0f} req/s  head {med['head']:>9,.0f} req/s"
            f"  head/base {med['head'] / med['base']:.3f}  (failures {failures})"
        )


def tree_server(
    tree: Path, env: dict[str, str], log: Path
) -> AbstractContextManager[subprocess.Popen[bytes]]:
    """`python -m server` importing the packages of `tree`."""
    return process([sys.executable, "-m", "server"], tree_env(tree, env), log, cwd=tree)


def tree_env(tree: Path, env: dict[str, str]) -> dict[str, str]:
    """`env` for a process importing the packages of `tree`, with only the settings that tree knows (an
    older commit refuses a setting added since)."""
    # Settings moved from contract/ to deploy/; a commit has one or the other.
    found = [tree / d / "settings.py" for d in ("deploy", "contract")]
    known = next(path for path in found if path.exists()).read_text()
    env = {
        k: v for k, v in env.items() if not k.startswith("ANALYTICS_") or f"    {k[10:].lower()}:" in known
    }
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))}


if __name__ == "__main__":
    main()
