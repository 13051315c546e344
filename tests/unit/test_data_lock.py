"""A stack's data directory is locked while its supervisor runs: a second claim is one line, and a
closed (or dead) holder leaves no lock behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deploy.data_lock import claim


def test_a_second_claim_on_a_held_data_dir_is_one_line_naming_the_holder_and_the_variable(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    held = claim(data)
    try:
        with pytest.raises(SystemExit) as refused:
            claim(data)
        assert str(refused.value) == (
            f"{data} is in use by another stack (pid {os.getpid()}); ANALYTICS_DATA_DIR moves it"
        )
        claim(tmp_path / "other").close()  # another directory is free
    finally:
        held.close()
    claim(data).close()  # released with its holder
