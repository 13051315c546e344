"""The fault harness's disk (tests/faults/lazyfs.py) keeps what was fsynced and forgets what was not
when the power goes, so a power-loss schedule that loses nothing means something."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.lazyfs import LazyDisk


@pytest.fixture
def disk(fuse: None, tmp_path: Path) -> Iterator[LazyDisk]:
    found = LazyDisk(tmp_path / "backing", tmp_path / "mount", tmp_path / "lazyfs.log")
    found.start()
    yield found
    found.stop()


def test_a_power_loss_keeps_fsynced_writes_and_forgets_the_rest(disk: LazyDisk) -> None:
    m = disk.mount
    fd = os.open(m / "log", os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, b"synced.")
    os.fsync(fd)
    os.write(fd, b" appended")
    os.pwrite(fd, b"S", 0)  # an overwrite of synced bytes, unsynced
    os.close(fd)
    (m / "never-synced").write_bytes(b"gone")
    with (m / "cut").open("w+b") as f:
        f.write(b"0123456789")
        f.flush()
        os.fsync(f.fileno())
        f.truncate(3)  # unsynced: the power loss puts the tail back
    (m / "dir").mkdir()
    (m / "dir" / "moved").write_bytes(b"x")
    os.rename(m / "dir", m / "renamed")
    assert (m / "log").read_bytes() == b"Synced. appended"

    dropped = disk.lose_power()

    b = disk.backing
    assert (b / "log").read_bytes() == b"synced."
    assert (b / "never-synced").read_bytes() == b""
    assert (b / "cut").read_bytes() == b"0123456789"
    assert (b / "renamed" / "moved").read_bytes() == b""  # the rename is kept, the unsynced data not
    assert dropped == len(b" appended") + 1 + len(b"gone") + len(b"3456789") + 1


def test_what_was_fsynced_is_there_after_the_disk_comes_back(disk: LazyDisk) -> None:
    with (disk.mount / "kept").open("wb") as f:
        f.write(b"kept")
        f.flush()
        os.fsync(f.fileno())
    assert disk.lose_power() == 0
    disk.start()
    assert (disk.mount / "kept").read_bytes() == b"kept"
