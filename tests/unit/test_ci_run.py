"""`.ci/run` installs each Debian package the tests need that is missing, and only those: run here with
stand-ins for dpkg-query, apt-get, sudo, git and `./just` that record what they were asked."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NEEDED = [
    "chromium", "chromium-driver", "podman", "runc", "mmdebstrap", "aardvark-dns", "catatonit",
    "iproute2", "nftables", "fuse3",
]  # fmt: skip


def stub(path: Path, body: str) -> None:
    path.write_text(f"#!/usr/bin/env bash\n{body}\n")
    path.chmod(0o755)


def ci_run(tmp_path: Path, installed: list[str]) -> list[str]:
    """The `apt-get install` packages a `.ci/run` in a copy of the checkout asks for, `installed` being
    what dpkg reports installed; the copy's `./just test` is a stand-in that passes."""
    checkout, bin_dir, asked = tmp_path / "checkout", tmp_path / "bin", tmp_path / "apt-get.log"
    (checkout / ".ci").mkdir(parents=True)
    bin_dir.mkdir()
    shutil.copy(ROOT / ".ci" / "run", checkout / ".ci" / "run")
    stub(checkout / "just", "exit 0")
    known = " ".join(installed)
    stub(
        bin_dir / "dpkg-query",
        f'for p in {known}; do [ "$p" = "${{@: -1}}" ] && {{ printf installed; exit 0; }}; done; exit 1',
    )
    stub(bin_dir / "apt-get", f'echo "$@" >> {asked}')
    stub(bin_dir / "sudo", 'exec "$@"')
    stub(bin_dir / "git", "exit 0")  # `git status --porcelain`: nothing left behind
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", str(checkout / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    calls = [line.split() for line in asked.read_text().splitlines()] if asked.exists() else []
    return [word for call in calls if call[0] == "install" for word in call[1:] if not word.startswith("-")]


@pytest.mark.parametrize(
    "missing",
    [
        ["aardvark-dns", "catatonit"],  # podman without what it only recommends
        ["chromium-driver"],
        ["runc", "catatonit"],
        NEEDED,
        [],
    ],
    ids=["podman's recommends", "the driver alone", "two apart", "all", "none"],
)
def test_each_missing_package_is_installed_and_only_those(tmp_path: Path, missing: list[str]) -> None:
    assert ci_run(tmp_path, [p for p in NEEDED if p not in missing]) == missing
