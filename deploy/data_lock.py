"""The data directory a stack runs on, locked for the supervisor's life: a second stack on it is refused."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

LOCK_NAME = "up.lock"


def claim(data_dir: Path) -> IO[str]:
    """Lock `data_dir` (made if missing) until the returned file is closed or this process ends, or
    raise SystemExit with one line when another stack holds it: two stacks writing one JetStream store
    or one Valkey directory would corrupt both. The lock is the kernel's (flock), so a stack killed
    with SIGKILL leaves none behind; the file itself stays, with the last holder's pid."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = (data_dir / LOCK_NAME).open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "?"
        lock.close()
        raise SystemExit(
            f"{data_dir} is in use by another stack (pid {holder}); ANALYTICS_DATA_DIR moves it"
        ) from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock
