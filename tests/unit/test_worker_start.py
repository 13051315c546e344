"""What an HTTP worker process does when granian builds its app."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def frozen_at_start(tmp_path: Path, **settings: str) -> int:
    """How many objects a freshly built worker put out of the garbage collector's reach."""
    probe = (
        "import gc; from server.__main__ import app_from_env; app_from_env(); print(gc.get_freeze_count())"
    )
    env = {**os.environ, "ANALYTICS_DATA_DIR": str(tmp_path), **settings}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True, timeout=60
    )
    return int(done.stdout.strip().splitlines()[-1])


def test_a_worker_freezes_what_it_built_at_start_out_of_the_collector(tmp_path: Path) -> None:
    assert frozen_at_start(tmp_path) > 10_000


def test_the_freeze_can_be_turned_off(tmp_path: Path) -> None:
    assert frozen_at_start(tmp_path, ANALYTICS_HTTP_GC_FREEZE="0") == 0
