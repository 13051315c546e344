"""How a command's process ends: with its parent (even one killed with SIGKILL), and promptly, without
a traceback, on SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def end_with_parent() -> None:
    """On Linux, the kernel sends SIGTERM when the parent dies: a command never outlives `just` or the
    replay that started it. Elsewhere nothing is done."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return


def on_stop_signals(graceful: Callable[[], bool]) -> list[int]:
    """SIGTERM and SIGINT: `graceful()` may take the stop (True: it will end the command itself);
    otherwise the command's task is cancelled. A second signal ends the process at once. Returns
    the signals seen (the exit status is 128 + the first)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    seen: list[int] = []

    def stop(sig: int) -> None:
        if seen:
            os._exit(128 + sig)
        seen.append(sig)
        if not graceful() and task is not None:
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig)
    return seen
