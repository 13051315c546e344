"""The lock: every dependency the project names is pinned there, with hashes."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_every_dependency_is_pinned_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    named = {_name(r) for r in project["dependencies"]}
    for group in project["optional-dependencies"].values():
        named |= {_name(r) for r in group if not r.startswith("hourglass")}
    lock = (ROOT / "requirements.lock").read_text()
    pinned = dict(re.findall(r"^([a-z0-9][a-z0-9._-]*)==([^\s;]+)", lock, re.M))
    assert named <= set(pinned), f"not in requirements.lock: {sorted(named - set(pinned))}"
    blocks = re.split(r"^(?=[a-z0-9])", lock, flags=re.M)[1:]
    assert all("--hash=sha256:" in block for block in blocks)
