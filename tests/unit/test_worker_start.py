"""What an HTTP worker process does when granian builds its app."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_a_worker_freezes_what_it_built_at_start_out_of_the_collector(tmp_path: Path) -> None:
    probe = (
        "import gc; from server.__main__ import app_from_env; app_from_env(); print(gc.get_freeze_count())"
    )
    env = {**os.environ, "ANALYTICS_DATA_DIR": str(tmp_path)}
    frozen = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True, timeout=60
    )
    assert int(frozen.stdout.strip().splitlines()[-1]) > 10_000
