"""`./just import FILE...`: NDJSON or CSV files (gzip too) sent through `POST /analytics/batch`, with
progress, keys that make a re-run a no-op, and the refused lines written beside each file.

A file is cut into chunks of CHUNK_LINES physical lines (a CSV chunk also carries the header). Chunk
`k` of a file whose content hashes to `h` is sent with `Idempotency-Key: imp-<h>-<k>`, so the server
gives its line `n` the key `imp-<h>-<k>/<n>`: a function of the file's bytes and the line's number
alone. Sending the same file again, whole or after a crash, stores events under the same keys, and the
projector counts each once (within the dedup window, ANALYTICS_DEDUP_WINDOW_S). A chunk answered 503 or
cut off is sent again with its key; lines with a `key` of their own keep it.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import msgspec

from ingest.batch_body import CSV, NDJSON

CHUNK_LINES = 1000
"""Part of every key an import makes: changing it would make a re-run count its files again."""
IN_FLIGHT = 4
RETRY_S = (0.5, 1.0, 2.0, 4.0, 8.0)


class ImportFailed(Exception):
    """The server refused a whole chunk (a 4xx other than 429) or never took it: said in one line."""


@dataclass(slots=True)
class Chunk:
    index: int
    first_line: int
    """The file's line number of the chunk's first event line (1-based)."""
    body: bytes
    header: bool
    """A CSV chunk: its line 1 is the file's header, so its line n is the file's first_line + n - 2."""

    def file_line(self, line: int) -> int:
        return self.first_line + line - (2 if self.header else 1)


@dataclass(slots=True)
class Tally:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    done_bytes: int = 0


def media_of(path: Path) -> tuple[str, bool]:
    """The batch media type a file's name says, and whether it is gzipped (`.gz`)."""
    name = path.name.lower()
    gzipped = name.endswith(".gz")
    base = name.removesuffix(".gz")
    if base.endswith(".csv"):
        return CSV, gzipped
    if base.endswith((".ndjson", ".jsonl", ".json")):
        return NDJSON, gzipped
    raise ImportFailed(f"{path}: name it .ndjson, .jsonl or .csv (optionally .gz) to say what it holds")


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()[:32]


def chunks(lines: Iterator[bytes], media: str) -> Iterator[Chunk]:
    """The file's lines in chunks of CHUNK_LINES physical lines, the CSV header in front of each."""
    header = next(lines, b"") if media == CSV else b""
    first = 2 if header else 1
    index, batch = 0, []
    for line in lines:
        batch.append(line if line.endswith(b"\n") else line + b"\n")
        if len(batch) == CHUNK_LINES:
            yield Chunk(index, first, header + b"".join(batch), bool(header))
            index, first, batch = index + 1, first + CHUNK_LINES, []
    if batch:
        yield Chunk(index, first, header + b"".join(batch), bool(header))


class Progress:
    """A bar redrawn in place on a terminal; a plain line every few seconds otherwise."""

    def __init__(self, out: IO[str], total_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._out = out
        self._tty = out.isatty()
        self._total = max(total_bytes, 1)
        self._clock = clock
        self._start = clock()
        self._last = 0.0

    def show(self, name: str, tally: Tally, done_bytes: int, final: bool = False) -> None:
        now = self._clock()
        if not final and now - self._last < (0.2 if self._tty else 5.0):
            return
        self._last = now
        elapsed = max(now - self._start, 1e-6)
        rate = tally.accepted / elapsed
        share = min(done_bytes / self._total, 1.0)
        eta = elapsed * (1 - share) / share if share > 0 else 0.0
        text = (
            f"{name}: {tally.accepted:,} accepted, {len(tally.rejected):,} rejected, "
            f"{rate:,.0f} events/s, {share:.0%}, ETA {eta:.0f} s"
        )
        if self._tty:
            bar = "#" * int(share * 20)
            self._out.write(f"\r[{bar:<20}] {text}\033[K" + ("\n" if final else ""))
        else:
            self._out.write(text + "\n")
        self._out.flush()


async def send(client: httpx.AsyncClient, chunk: Chunk, media: str, key: str) -> dict[str, Any]:
    """The batch answer for one chunk, retried with the same key while the server cannot take it."""
    headers = {"Content-Type": media, "Idempotency-Key": key}
    for wait in (*RETRY_S, None):
        try:
            answer = await client.post("/analytics/batch", content=chunk.body, headers=headers)
        except httpx.TransportError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            if answer.status_code == 200:
                result: dict[str, Any] = msgspec.json.decode(answer.content)
                return result
            if answer.status_code not in (429, 503):
                raise ImportFailed(f"lines {chunk.first_line}+: {answer.status_code} {answer.text.strip()}")
            problem = f"{answer.status_code} {answer.text.strip()}"
            retry_after = answer.headers.get("retry-after", "")
            if wait is not None and retry_after.isdigit():
                wait = max(wait, float(retry_after))
        if wait is None:
            raise ImportFailed(f"lines {chunk.first_line}+: the server did not take them ({problem})")
        await asyncio.sleep(wait)
    raise AssertionError("unreachable")


async def import_file(client: httpx.AsyncClient, path: Path, progress: Progress, tally: Tally) -> None:
    media, gzipped = media_of(path)
    prefix = f"imp-{file_hash(path)}"
    pending: set[asyncio.Task[tuple[Chunk, dict[str, Any]]]] = set()

    async def one(chunk: Chunk) -> tuple[Chunk, dict[str, Any]]:
        return chunk, await send(client, chunk, media, f"{prefix}-{chunk.index}")

    def settle(done: set[asyncio.Task[tuple[Chunk, dict[str, Any]]]]) -> None:
        for task in done:
            chunk, result = task.result()
            tally.accepted += result["accepted"]
            tally.duplicates += result["duplicates"]
            tally.rejected += [(chunk.file_line(r["line"]), r["error"]) for r in result["rejected"]]
            tally.done_bytes += len(chunk.body)

    with path.open("rb") as raw:
        lines: Iterator[bytes] = iter(gzip.GzipFile(fileobj=raw)) if gzipped else iter(raw)
        try:
            for chunk in chunks(lines, media):
                if len(pending) >= IN_FLIGHT:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    settle(done)
                    progress.show(path.name, tally, raw.tell())
                pending.add(asyncio.create_task(one(chunk)))
            if pending:
                done, pending = await asyncio.wait(pending)
                settle(done)
        finally:
            for task in pending:
                task.cancel()
    progress.show(path.name, tally, raw_size(path), final=True)


def raw_size(path: Path) -> int:
    return path.stat().st_size


def write_rejects(path: Path, rejected: list[tuple[int, str]]) -> Path | None:
    """`<file>.rejects`: a line per refused line, `<line number>\t<why>`; removed when there are none."""
    target = path.with_name(path.name + ".rejects")
    if not rejected:
        target.unlink(missing_ok=True)
        return None
    target.write_text("".join(f"{line}\t{why}\n" for line, why in sorted(rejected)))
    return target


async def import_files(base_url: str, paths: list[Path], out: IO[str] = sys.stderr) -> int:
    """0: every line accepted; 1: some were refused (see the .rejects files); 2: an import failed."""
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        out.write(f"import: no such file: {', '.join(missing)}\n")
        return 2
    status = 0
    timeout = httpx.Timeout(60.0, connect=5.0)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout) as client:
        for path in paths:
            tally = Tally()
            try:
                await import_file(client, path, Progress(out, raw_size(path)), tally)
            except (ImportFailed, OSError, EOFError, gzip.BadGzipFile) as exc:
                out.write(f"\nimport: {path}: {exc}\n")
                return 2
            rejects = write_rejects(path, tally.rejected)
            line = f"{path}: {tally.accepted:,} events accepted, {tally.duplicates:,} duplicates"
            if rejects is not None:
                line += f", {len(tally.rejected):,} lines refused (see {rejects})"
                status = 1
            out.write(line + "\n")
    return status
