"""Every `./just bench*` module starts as its recipe runs it (`python -m tests.bench.<name>`): an import
cycle between bench modules shows only when one of them is `__main__`, which no other test does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCHES = sorted(
    p.stem for p in (ROOT / "tests" / "bench").glob("*.py") if 'if __name__ == "__main__":' in p.read_text()
)


def test_every_bench_module_starts_and_prints_its_help() -> None:
    assert len(BENCHES) >= 10
    runs = {
        name: subprocess.Popen(
            [sys.executable, "-m", f"tests.bench.{name}", "--help"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in BENCHES
    }
    failed = {}
    for name, run in runs.items():
        out, err = run.communicate(timeout=120)
        if run.returncode != 0 or "usage:" not in out:
            failed[name] = err.strip().splitlines()[-1:] or out[:200]
    assert failed == {}
