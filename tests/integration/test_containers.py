"""The image and both compose stacks, run for real with podman and podman-compose: the known workload
through the one published port (exact counts), a replay, a restart with the volumes kept, a projector
and a NATS container crashed under load (and on the cluster a Valkey primary killed, its replica
promoted) with nothing lost, and a teardown that leaves nothing behind. On the cluster stack also the
README's curl lines through its HAProxy, and per-client rate limits that see each client behind it."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from contract.hours import HOUR_MS, system_now_ms
from deploy import image
from deploy.servers import ROOT
from tests.helpers import eventually
from tests.integration.load import Tally, drive, wait_until_done
from tests.integration.readme import readme_counts_hold, readme_truth, run_readme_curl_lines
from tests.integration.workload import Truth, answers, parse_text
from tests.ports import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
COMPOSE = str(Path(sys.executable).parent / "podman-compose")
NEEDED = ("podman", "runc", "mmdebstrap")


@pytest.fixture(scope="module")
def built() -> str:
    """The image (built once per set of inputs, then reused); in CI podman must be there."""
    missing = [tool for tool in NEEDED if shutil.which(tool) is None]
    if missing:
        why = f"{', '.join(missing)} not installed (apt-get install podman runc mmdebstrap; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    started = time.monotonic()
    tag = image.build(quiet=True)
    print(f"\nimage {tag}: {image.size_mb(tag):.0f} MB, ready in {time.monotonic() - started:.1f} s")
    return tag


@dataclass
class Stack:
    file: str
    project: str
    image: str
    port: int
    subnet: str = ""
    """The first three octets of the cluster stack's /24 (its Valkey nodes have fixed addresses)."""
    limits: dict[str, str] = field(default_factory=dict)
    """HOURGLASS_POST_RATE_PER_S and HOURGLASS_POST_BURST for the cluster stack's HTTP servers."""

    def env(self) -> dict[str, str]:
        subnet = {"HOURGLASS_SUBNET": self.subnet} if self.subnet else {}
        return {
            **image.engine_env(),
            "HOURGLASS_IMAGE": self.image,
            "HOURGLASS_HTTP_PORT": str(self.port),
            **subnet,
            **self.limits,
        }

    def compose(self, *args: str) -> str:
        argv = [COMPOSE, "-p", self.project, "-f", str(ROOT / "deploy" / self.file), *args]
        done = subprocess.run(argv, env=self.env(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{' '.join(args)}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
        return done.stdout

    def podman(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(["podman", *args], env=self.env(), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 or not check, f"podman {' '.join(args)}: {done.stderr[-2000:]}"
        return done.stdout

    def healthy(self, service: str) -> bool:
        """The service's own healthcheck (`podman healthcheck run`) passes now."""
        argv = ["podman", "healthcheck", "run", self.container(service)]
        return subprocess.run(argv, env=self.env(), capture_output=True, timeout=120).returncode == 0

    def podman_stderr(self, *args: str) -> str:
        done = subprocess.run(["podman", *args], env=self.env(), capture_output=True, text=True, timeout=120)
        return done.stderr

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def crash(self, service: str) -> None:
        """SIGKILL the service's process, as a crash or the OOM killer would (`podman kill` counts as a
        deliberate stop, which no restart policy undoes)."""
        init = int(self.podman("inspect", "--format", "{{.State.Pid}}", self.container(service)).strip())
        children = [
            int(stat.parent.name) for stat in Path("/proc").glob("[0-9]*/stat") if _parent(stat) == init
        ]
        assert children, f"{service} runs nothing under its init"
        os.kill(children[0], signal.SIGKILL)

    def role(self, service: str) -> str:
        """The Valkey node's replication role (master or slave), asked inside its container."""
        return self.podman("exec", self.container(service), "python3", "-c", ROLE, check=False).strip()

    def restarts(self, service: str) -> tuple[int, bool]:
        found = self.podman(
            "inspect", "--format", "{{.RestartCount}} {{.State.Running}}", self.container(service)
        )
        count, running = found.split()
        return int(count), running == "true"

    def leftovers(self) -> list[str]:
        label = f"label=io.podman.compose.project={self.project}"
        return [
            *self.podman("ps", "-a", "--filter", label, "--format", "{{.Names}}").split(),
            *self.podman("volume", "ls", "--filter", label, "--format", "{{.Name}}").split(),
            *self.podman("network", "ls", "--filter", label, "--format", "{{.Name}}").split(),
        ]


@pytest.fixture
def stacks() -> Iterator[list[Stack]]:
    """Every stack a test brings up is torn down, volumes included, and must leave nothing behind."""
    made: list[Stack] = []
    yield made
    for stack in made:
        stack.compose("down", "-v", "-t", "5")
        assert stack.leftovers() == [], f"{stack.project} left behind: {stack.leftovers()}"


def _parent(stat: Path) -> int:
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def merged(*truths: Truth) -> Truth:
    out = Truth()
    for truth in truths:
        for hour in truth.hours():
            out.clicks[hour] += truth.clicks[hour]
            out.impressions[hour] += truth.impressions[hour]
            out.users[hour] |= truth.users[hour]
    return out


async def exact(
    http: httpx.AsyncClient, truth: Truth, timeout: float = 90, settled_in: tuple[Stack, str] | None = None
) -> dict[int, tuple[int, int, int]]:
    """The answers once clicks and impressions are exact (unique users within HyperLogLog's error).
    With `settled_in` (the stack and a projector service), still the same once every projector consumer
    has caught up: a first match alone cannot see a count that later goes past the truth (an event
    applied twice after a crash), this can."""

    async def matching() -> dict[int, tuple[int, int, int]]:
        return await eventually(
            lambda: answers(http, truth),
            lambda a: all(a[h][1:] == truth.text(h)[1:] for h in truth.hours()),
            timeout=timeout,
        )

    got = await matching()
    if settled_in is not None:
        lags = functools.partial(asyncio.to_thread, consumer_lags, *settled_in)
        await eventually(lags, caught_up, timeout=timeout, interval=0.5)
        got = await matching()
    for hour in truth.hours():
        users = truth.text(hour)[0]
        assert abs(got[hour][0] - users) <= max(1, users * 0.03), (hour, got[hour], users)
    return got


LAG = re.compile(r" lag +(\d+) unprocessed, +(\d+) in flight")


def consumer_lags(stack: Stack, projector: str) -> list[tuple[int, int]] | None:
    """(unprocessed, in flight) of every projector consumer, from `projector inspect` in its container;
    None when a consumer is missing or the command could not reach NATS yet."""
    deadline = ["-e", "ANALYTICS_CONNECT_DEADLINE_S=30"]
    view = stack.podman(
        "exec", *deadline, stack.container(projector), "python3", "-m", "projector", "inspect", check=False
    )
    if "not created yet" in view:
        return None
    found = [(int(m[1]), int(m[2])) for m in LAG.finditer(view)]
    return found or None


def caught_up(lags: list[tuple[int, int]] | None) -> bool:
    return lags is not None and all(lag == (0, 0) for lag in lags)


async def ready(http: httpx.AsyncClient) -> None:
    last: list[str] = []

    async def probe() -> httpx.Response:
        response = await http.get("/readyz")
        last[:] = [response.text]
        return response

    try:
        await eventually(probe, lambda r: r.status_code == 200, timeout=120, interval=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; /readyz said: {last}") from None


def free_subnet(stack: Stack) -> str:
    """A 10.89.N.0/24 no podman network uses (podman refuses a subnet taken)."""
    taken = stack.podman("network", "ls", "--format", "{{range .Subnets}}{{.Subnet}} {{end}}")
    for n in [*range(os.getpid() % 100 + 120, 250), *range(120, 250)]:
        if f"10.89.{n}.0/24" not in taken:
            return f"10.89.{n}"
    raise AssertionError("no free 10.89.N.0/24 for the cluster stack")


ROLE = """
from urllib.parse import urlsplit
import redis
u = urlsplit(open("/data/secrets/redis-admin.url").read().strip())
node = redis.Redis(port=6379, username=u.username, password=u.password, socket_timeout=2)
print(node.info("replication")["role"])
"""
"""Asks the Valkey node of its container for its role, as the stack's admin."""


async def kill_a_primary(stack: Stack, primary: str, replica: str) -> float:
    """SIGKILL the Valkey primary's container (`podman kill` is a deliberate stop: it stays down); its
    replica is promoted. Returns the seconds until it was."""
    assert stack.role(primary) == "master"
    assert stack.role(replica) == "slave"
    started = time.monotonic()
    stack.podman("kill", "-s", "KILL", stack.container(primary))
    await eventually(
        lambda: asyncio.to_thread(stack.role, replica), lambda role: role == "master", timeout=60
    )
    return time.monotonic() - started


async def run_the_workload(
    stack: Stack,
    projector: str,
    nats: str,
    valkey: tuple[str, str] | None = None,
    front: Callable[[Stack, httpx.AsyncClient], Awaitable[Truth]] | None = None,
) -> str:
    """The end-to-end workload against a stack just brought up; returns a line of timings. `valkey` is
    a (primary, its replica) pair of a cluster stack, the primary killed with the rest. `front` runs
    first on the fresh stack and returns what it stored in the hours the workload checks."""
    marks = [time.monotonic()]
    stack.compose("up", "-d")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.port}", timeout=10) as http:
        await ready(http)
        marks.append(time.monotonic())
        before = await front(stack, http) if front else Truth()
        first = await drive(http, system_now_ms(), 300, concurrency=4, duplicate_every=10, seed=31)
        live = await exact(http, merged(before, first.truth))
        # /readyz/ingest: 200. A server that came up late (a restart after a failed start) is polled for,
        # and its log printed if it never does.
        service = http_service(stack)
        try:
            await eventually(lambda: asyncio.to_thread(stack.healthy, service), bool, timeout=60)
        except AssertionError:
            print(stack.podman("logs", "--tail", "200", stack.container(service), check=False))
            print(stack.podman_stderr("logs", "--tail", "200", stack.container(service)))
            raise

        # A full replay rebuilds every projection from the log: the same answers.
        # Three nodes' containers on two shared cores can take more than the default 5 s to answer a new
        # connection (a clean-clone run saw it): the command's deadline is a setting, raised here.
        deadline = ["-e", "ANALYTICS_CONNECT_DEADLINE_S=30"]
        replay = ["exec", *deadline, stack.container(projector), "python3", "-m", "projector", "replay"]
        stack.podman(*replay)
        assert await exact(http, merged(before, first.truth)) == live
        marks.append(time.monotonic())

        # Down and up again with the volumes kept: the stream and the projections are still there.
        # Up without the rate limit `front` may have set: the crashes' load comes from one client.
        stack.compose("down", "-t", "5")
        stack.limits.clear()
        stack.compose("up", "-d")
        await ready(http)
        assert await exact(http, merged(before, first.truth)) == live
        marks.append(time.monotonic())

        # A projector and a NATS container crash under load; every event with a 204 counts once.
        second = Tally()
        load = asyncio.create_task(
            drive(http, system_now_ms(), 600, concurrency=4, seed=32, timeout=180, tally=second)
        )
        await wait_until_done(second, 100)
        promoted = await kill_a_primary(stack, *valkey) if valkey else None
        stack.crash(projector)
        stack.crash(nats)
        for service in (projector, nats):
            await eventually(
                lambda s=service: asyncio.to_thread(stack.restarts, s),  # type: ignore[misc]
                lambda found: found[0] >= 1 and found[1],
                timeout=60,
                interval=0.5,
            )
        await load
        await exact(
            http, merged(before, first.truth, second.truth), timeout=120, settled_in=(stack, projector)
        )
        marks.append(time.monotonic())
    steps = ("up", "front+workload+replay" if front else "workload+replay", "restart", "crashes")
    return " ".join(f"{s}={b - a:.0f}s" for s, a, b in zip(steps, marks, marks[1:], strict=False)) + (
        f" ({second.report()})" + (f" replica promoted in {promoted:.1f}s" if promoted else "")
    )


async def refused_clearly(stack: Stack, tmp_path: Path) -> None:
    """Bad configuration, each in a container of its own beside the stack: a missing secret file is
    waited for with a line saying which; a wrong password and an unreachable NATS keep the server
    running and retrying, its /readyz a 503 that names the dependency."""
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    for name, role in (("nats-ingest", "ingest"), ("nats-api", "api"), ("redis-api", "api")):
        (wrong / f"{name}.url").write_text(f"{name.split('-')[0]}://{role}:not-the-password@x\n")
        (wrong / f"{name}.url").chmod(0o644)
    cases = {
        "wrong-password": (["-v", f"{wrong}:/data/secrets:ro"], "redis: AuthenticationError"),
        "no-nats": (
            [
                "-v",
                f"{stack.project}_secrets:/data/secrets:ro",
                "-e",
                "ANALYTICS_NATS_URL=nats://nowhere:4222",
            ],
            "nats: not connected",
        ),
    }
    network = f"{stack.project}_default"
    label = f"io.podman.compose.project={stack.project}"  # so a leftover fails the teardown check
    servers = {"ANALYTICS_NATS_URL": "nats://nats:4222", "ANALYTICS_REDIS_URL": "redis://valkey:6379/0"}
    env = [arg for k, v in servers.items() for arg in ("-e", f"{k}={v}")]
    for case, (args, said) in cases.items():
        name = f"{stack.project}_{case}"
        stack.podman("run", "-d", "--name", name, "--label", label, "--network", network, *env, *args,
                     stack.image, "python3", "-m", "server")  # fmt: skip
        found = await eventually(
            functools.partial(
                asyncio.to_thread, stack.podman, "exec", name, "python3", "-c", ASK, check=False
            ),
            functools.partial(_a_503_saying, said),
            timeout=30,
            interval=0.5,
        )
        print(f"{case}: /readyz {found.strip()!r}")
        stack.podman("rm", "-f", "-t", "1", name)
    name = f"{stack.project}_no-secrets"
    stack.podman("run", "-d", "--name", name, "--label", label, "--network", network, *env, stack.image,
                 "python3", "-m", "deploy.after_secrets", "python3", "-m", "server")  # fmt: skip

    def logs() -> str:
        return stack.podman("logs", name) + stack.podman_stderr("logs", name)

    await eventually(
        lambda: asyncio.to_thread(logs),
        lambda out: "waiting for /data/secrets/nats.conf" in out,
        timeout=30,
        interval=0.5,
    )
    stack.podman("rm", "-f", "-t", "1", name)


def _a_503_saying(said: str, answer: str) -> bool:
    return answer.startswith("503") and said in answer


ASK = """
import sys, urllib.error, urllib.request
method, path = sys.argv[1:3] if len(sys.argv) > 2 else ("GET", "/readyz")
try:
    request = urllib.request.Request("http://127.0.0.1:8080" + path, method=method)
    answer = urllib.request.urlopen(request, timeout=2)
    print(answer.status, answer.read().decode())
except urllib.error.HTTPError as exc:
    print(exc.code, exc.read().decode())
except OSError as exc:
    print("no answer", exc)
"""
"""Asks the HTTP server of its container (`python3 -c ASK [METHOD PATH]`): the image has no curl."""


def kube_yaml(stack: Stack) -> str:
    """deploy/k8s's ConfigMap and Deployments (the kinds podman 4.3 plays) beside the compose stack:
    its servers and image; the role Secret volumes (which kube play lacks) become the stack's secrets
    volume, as a claim; no containerPort (kube play would publish it on the host's port)."""
    out = []
    for name in ("config.yaml", "http.yaml", "projector.yaml"):
        for doc in yaml.safe_load_all((ROOT / "deploy" / "k8s" / name).read_text()):
            if doc["kind"] == "ConfigMap":
                doc["data"].update(
                    ANALYTICS_NATS_URL="nats://nats:4222",
                    ANALYTICS_REDIS_URL="redis://valkey:6379/0",
                    ANALYTICS_STREAM_REPLICAS="1",
                    ANALYTICS_PARTITIONS="4",
                )
            elif doc["kind"] == "Deployment":
                doc["metadata"]["name"] = f"{stack.project}-{doc['metadata']['name']}"
                pod = doc["spec"]["template"]["spec"]
                for volume in pod["volumes"]:
                    if volume.pop("secret", None) is not None:
                        volume["persistentVolumeClaim"] = {"claimName": f"{stack.project}_secrets"}
                for container in pod["containers"]:
                    container["image"] = stack.image
                    container.pop("ports", None)
                    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                        if probe in container:
                            container[probe]["httpGet"]["port"] = 8080
            else:
                continue
            out.append(doc)
    return yaml.safe_dump_all(out)


async def play_the_manifests(stack: Stack, tmp_path: Path) -> None:
    """The Kubernetes HTTP and projector Deployments, played by podman as they are written (uid 10001,
    read-only root, the role's secrets as files): an event POSTed to the played HTTP pod is counted and
    read through the compose stack's port."""
    path = tmp_path / "kube.yaml"
    path.write_text(kube_yaml(stack))
    http = f"{stack.project}-hourglass-http-pod-0-http"

    def ask(*request: str) -> str:
        return stack.podman("exec", http, "python3", "-c", ASK, *request, check=False)

    try:
        await played_and_ready(stack, path, http, ask)
        assert "Read-only file system" in stack.podman_stderr("exec", http, "touch", "/app/written")
        assert stack.podman("exec", http, "id", "-u").strip() == "10001"
        hour_ms = system_now_ms() // HOUR_MS * HOUR_MS
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.port}", timeout=10) as front:
            before = parse_text((await front.get(f"/analytics?timestamp={hour_ms}")).text)
            posted = await asyncio.to_thread(ask, "POST", f"/analytics?timestamp={hour_ms}&user=kube&click")
            assert posted.startswith("204"), posted
            after = await eventually(
                lambda: front.get(f"/analytics?timestamp={hour_ms}"),
                lambda r: parse_text(r.text)[1] == before[1] + 1,
            )
        print(
            f"kube play: HTTP pod ready, its POST counted ({before[1]} -> {parse_text(after.text)[1]} clicks)"
        )
    finally:
        stack.podman("kube", "down", str(path))
    assert stack.podman("pod", "ls", "--filter", f"name={stack.project}-", "--format", "{{.Name}}") == ""


async def played_and_ready(stack: Stack, path: Path, http: str, ask: Callable[[], str]) -> None:
    """Plays the manifests and waits for the HTTP pod's /readyz. Once, in a clean-clone CI run, a played
    pod never reached the compose services (`nats: not connected`, `redis: Timeout connecting`) while
    the same test passed before and after: the first failure is printed with the pod's log, and the
    manifests are played once more. A manifest that is wrong fails both times."""
    for attempt in (1, 2):
        stack.podman("kube", "play", "--network", f"{stack.project}_default", str(path))
        try:
            await eventually(lambda: asyncio.to_thread(ask), lambda out: out.startswith("200"), timeout=60)
            return
        except AssertionError as failed:
            if attempt == 2:
                raise
            logs = stack.podman("logs", "--tail", "20", http, check=False)
            print(f"kube play, attempt 1: {failed}; the HTTP pod's last lines:\n{logs}")
            stack.podman("kube", "down", str(path), check=False)


def http_service(stack: Stack) -> str:
    return "http-1" if "cluster" in stack.file else "http"


async def test_the_single_node_stack_runs_counts_replays_restarts_and_survives_crashes(
    built: str, stacks: list[Stack], tmp_path: Path
) -> None:
    stack = Stack("compose.yaml", f"hgtest{os.getpid()}", built, free_port())
    stacks.append(stack)
    print(f"\ncompose.yaml: {await run_the_workload(stack, 'projector', 'nats')}")
    await refused_clearly(stack, tmp_path)
    await play_the_manifests(stack, tmp_path)


CLIENT = """
import http.client, json, sys
conn = http.client.HTTPConnection("balancer", 8080, timeout=10)
def post(path, headers={}):
    conn.request("POST", path, headers=headers)
    answer = conn.getresponse()
    answer.read()
    return answer.status
if sys.argv[1:2] == ["exhaust"]:
    # No timestamp: each is refused with 400 after the limit counted it, so nothing is stored. Each
    # server gives a client at most its burst of 400s (next to nothing refills); round robin spreads
    # the POSTs, so a run of 50 429s means every server in rotation has an empty bucket for it.
    burst = int(sys.argv[2])
    sent, refused, last = 0, 0, []
    while (refused < burst or last[-50:] != [429] * 50) and sent < 40 * burst:
        last.append(post("/analytics"))
        refused += last[-1] == 400
        sent += 1
    forged = [
        post("/analytics?timestamp=123&user=forger&click", {"X-Forwarded-For": f"192.0.2.{i}"})
        for i in range(1, 5)
    ]
    print(json.dumps({"sent": sent, "400s": refused, "answers": sorted(set(last)), "forged": forged}))
else:
    print(json.dumps({"other": post("/analytics?timestamp=123&user=other&click")}))
"""
"""A client on the stack's network (its container's own address), POSTing through the balancer."""

LIMITS = {"HOURGLASS_POST_RATE_PER_S": "0.01", "HOURGLASS_POST_BURST": "500"}
"""Per client and HTTP server: a burst the first workload (about 340 POSTs from the host) stays under,
then next to nothing."""


async def readme_and_rate_limits(stack: Stack, http: httpx.AsyncClient) -> Truth:
    """On the fresh cluster stack: the README's curl lines through the published port (HAProxy) give
    what the README says; then a client on the stack's network spends its POST limit and gets 429, a
    forged X-Forwarded-For included, while a second container and the host still get 204."""
    now_ms = await run_readme_curl_lines(str(http.base_url).rstrip("/"))
    await readme_counts_hold(http, now_ms)
    label = f"io.podman.compose.project={stack.project}"  # so a leftover fails the teardown check
    run = ["run", "--rm", "--label", label, "--network", f"{stack.project}_default", stack.image]

    def client(*args: str) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(stack.podman(*run, "python3", "-c", CLIENT, *args))
        return found

    started = time.monotonic()
    burst = int(stack.limits["HOURGLASS_POST_BURST"])
    spent = await asyncio.to_thread(client, "exhaust", str(burst))
    assert spent["answers"] == [400, 429], spent
    # A burst from each server in HAProxy's rotation (both, or one while the other's checks have not
    # passed yet, as once in CI), then next to nothing.
    servers = round(spent["400s"] / burst)
    if servers != 2:  # say why: the balancer logs each server going up or down
        balancer = stack.container("balancer")
        print(stack.podman("logs", balancer) + stack.podman_stderr("logs", balancer))
    assert servers in (1, 2), spent
    assert abs(spent["400s"] - servers * burst) <= 2, spent
    assert spent["forged"] == [429] * 4, spent  # the balancer's X-Forwarded-For is the right-most
    assert await asyncio.to_thread(client) == {"other": 204}
    host = await http.post("/analytics?timestamp=123&user=host&click")
    assert host.status_code == 204, host.text
    print(f"\nrate limits behind HAProxy: {spent} in {time.monotonic() - started:.1f} s; others: 204")
    user = stack.podman("top", stack.container("balancer"), "user", "comm")
    assert [line.split() for line in user.splitlines() if "haproxy" in line] == [["hourglass", "haproxy"]]
    return readme_truth(now_ms)


async def test_the_cluster_stack_runs_counts_replays_restarts_and_survives_crashes(
    built: str, stacks: list[Stack]
) -> None:
    stack = Stack("compose.cluster.yaml", f"hgtestc{os.getpid()}", built, free_port(), limits=dict(LIMITS))
    stack.subnet = free_subnet(stack)
    stacks.append(stack)
    timings = await run_the_workload(
        stack, "projector-1", "nats-2", ("valkey-1", "valkey-4"), front=readme_and_rate_limits
    )
    print(f"\ncompose.cluster.yaml: {timings}")
