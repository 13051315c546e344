"""What the image must not hold (a compiler, a package manager, pip) and must (time zones), checked on
the image test_containers builds, in one short container run."""

from __future__ import annotations

import subprocess

import pytest

from deploy import image
from tests.integration.test_containers import built  # noqa: F401  (a fixture: the same built image)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

FORBIDDEN = (
    *("gcc", "cc", "c++", "g++", "clang", "make", "ld"),
    *("apt", "apt-get", "dpkg", "rpm", "yum", "dnf", "apk", "pip", "pip3", "uv"),
)
LOOK = f"""
for tool in {" ".join(FORBIDDEN)}; do command -v "$tool"; done
python3 -c 'import importlib.util as u; print(*[m for m in ("pip", "ensurepip") if u.find_spec(m)])'
python3 -c 'import zoneinfo; print("zone", zoneinfo.ZoneInfo("Asia/Kolkata"))'
"""


def test_the_image_has_no_compiler_package_manager_or_pip_and_has_time_zones(built: str) -> None:  # noqa: F811
    done = subprocess.run(
        ["podman", "run", "--rm", built, "sh", "-c", LOOK],
        env=image.engine_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    # Everything but the zone line: each tool found prints its path, each module found its name.
    assert done.stdout.splitlines() == ["", "zone Asia/Kolkata"], done.stdout
