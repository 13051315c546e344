"""A passthrough filesystem that, on a simulated power loss, forgets every write not yet fsynced (as
Jepsen's LazyFS does), so the fault harness can run nats-server's store on it and cut the power.

`python -m tests.faults.lazyfs BACKING MOUNT` mounts BACKING at MOUNT in the foreground. SIGTERM is the
power loss: the mount goes away, and then each file changed since its last fsync is put back as that
fsync left it (overwritten bytes restored, anything past its size then dropped), which is what a page
cache that was never written back leaves on the disk. A file created and never fsynced is left empty.
Metadata (creates, renames, unlinks) is kept, as a journaling filesystem would. One line on stderr says
what was dropped.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mfusepy  # type: ignore[import-untyped]


@dataclass
class Unsynced:
    """What a file looked like at its last fsync: its size, and the bytes overwritten since, in order."""

    size: int
    undo: list[tuple[int, bytes]] = field(default_factory=list)


class LazyFS(mfusepy.Operations):  # type: ignore[misc]
    use_ns = True

    def __init__(self, backing: str) -> None:
        self.root = os.path.realpath(backing)
        self.unsynced: dict[str, Unsynced] = {}
        self.syncs = 0

    def _real(self, path: str) -> str:
        return self.root + path

    def _changing(self, path: str | None, fd: int) -> Unsynced | None:
        if path is None:  # unlinked while open: nothing of it survives a power loss anyway
            return None
        if path not in self.unsynced:  # its first change since its last fsync: what it holds is durable
            self.unsynced[path] = Unsynced(os.fstat(fd).st_size)
        return self.unsynced[path]

    # data

    def create(self, path: str, mode: int, flags: int) -> int:
        fd = os.open(self._real(path), (flags | os.O_CREAT) & ~os.O_APPEND, mode)
        self.unsynced[path] = Unsynced(0)
        return fd

    def open(self, path: str, flags: int) -> int:
        return os.open(self._real(path), flags & ~os.O_APPEND)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return os.pread(fh, size, offset)

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        state = self._changing(path, fh)
        if state is not None and offset < state.size:
            state.undo.append((offset, os.pread(fh, min(len(data), state.size - offset), offset)))
        return os.pwrite(fh, data, offset)

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        if path is None:
            raise mfusepy.FuseOSError(errno.EBADF)
        fd = os.open(self._real(path), os.O_RDWR)
        try:
            state = self._changing(path, fd)
            if state is not None and length < state.size:
                state.undo.append((length, os.pread(fd, state.size - length, length)))
            os.ftruncate(fd, length)
        finally:
            os.close(fd)
        return 0

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        # The backing file itself is not what is under test: it is not fsynced, only marked durable.
        self.syncs += 1
        if path is not None:
            self.unsynced.pop(path, None)
        return 0

    def flush(self, path: str, fh: int) -> int:
        return 0

    def release(self, path: str, fh: int) -> int:
        os.close(fh)
        return 0

    def fallocate(self, path: str, mode: int, offset: int, size: int, fh: int) -> int:
        raise mfusepy.FuseOSError(errno.EOPNOTSUPP)

    # metadata, kept across a power loss

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        st = os.lstat(self._real(path))
        keys = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_atime", "st_mtime", "st_ctime")
        return {key: getattr(st, key) for key in keys}

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *os.listdir(self._real(path))]

    def mkdir(self, path: str, mode: int) -> int:
        os.mkdir(self._real(path), mode)
        return 0

    def rmdir(self, path: str) -> int:
        os.rmdir(self._real(path))
        return 0

    def unlink(self, path: str) -> int:
        os.unlink(self._real(path))
        self.unsynced.pop(path, None)
        return 0

    def rename(self, old: str, new: str) -> int:
        os.rename(self._real(old), self._real(new))
        moved = {p: s for p, s in self.unsynced.items() if p == old or p.startswith(old + "/")}
        self.unsynced.pop(new, None)
        for path, state in moved.items():
            del self.unsynced[path]
            self.unsynced[new + path[len(old) :]] = state
        return 0

    def chmod(self, path: str, mode: int) -> int:
        os.chmod(self._real(path), mode)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        os.chown(self._real(path), uid, gid)
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        if times is None:
            os.utime(self._real(path))
        else:
            os.utime(self._real(path), ns=times)
        return 0

    def access(self, path: str, amode: int) -> int:
        if not os.access(self._real(path), amode):
            raise mfusepy.FuseOSError(errno.EACCES)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self._real(path))
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files", "f_frsize")
        return {key: getattr(st, key) for key in keys} | {"f_namemax": st.f_namemax}

    # the power loss

    def lose_power(self) -> tuple[int, int]:
        """Put every file changed since its last fsync back as that fsync left it; (files, bytes) dropped."""
        files = dropped = 0
        for path, state in self.unsynced.items():
            real = self._real(path)
            if not os.path.isfile(real):
                continue
            with open(real, "r+b") as f:
                size = os.fstat(f.fileno()).st_size
                for offset, old in reversed(state.undo):
                    os.pwrite(f.fileno(), old, offset)
                f.truncate(state.size)
            files += 1
            dropped += max(0, size - state.size) + sum(len(old) for _, old in state.undo)
        self.unsynced.clear()
        return files, dropped


@dataclass
class LazyDisk:
    """One node's disk: a LazyFS process mounting `backing` at `mount`, and its power switch."""

    backing: Path
    mount: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    dropped: list[int] = field(default_factory=list)
    """Unsynced bytes dropped by each power loss so far."""

    def start(self) -> None:
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mount.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            argv = [sys.executable, "-m", "tests.faults.lazyfs", str(self.backing), str(self.mount)]
            self.proc = subprocess.Popen(argv, cwd=Path(__file__).parents[2], stderr=out)
        deadline = time.monotonic() + 20
        while not os.path.ismount(self.mount):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"lazyfs did not mount {self.mount}: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)  # the mount appearing: nothing to wait on but the kernel's mount table

    def lose_power(self) -> int:
        """Cut the power (whatever runs on the disk must be dead already); the unsynced bytes dropped."""
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        self.proc = None
        found = re.findall(r"power lost, (\d+) unsynced bytes", self.log.read_text())
        self.dropped.append(int(found[-1]) if found else 0)
        return self.dropped[-1]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.lose_power()
        if os.path.ismount(self.mount):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mount)], check=False)


def main() -> None:
    backing, mount = sys.argv[1:3]
    fs = LazyFS(backing)
    with contextlib.suppress(RuntimeError):  # libfuse's "ended by a signal" (8): the power loss asked for
        mfusepy.FUSE(fs, mount, foreground=True, nothreads=True)  # returns on SIGTERM, unmounted
    files, dropped = fs.lose_power()
    print(f"lazyfs {mount}: power lost, {dropped} unsynced bytes in {files} files dropped", file=sys.stderr)


if __name__ == "__main__":
    main()
