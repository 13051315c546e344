"""The import's pure parts: chunks cut by physical lines (a CSV header in front of each), a server's
line number mapped back to the file's, the media a file name says, and progress on a terminal or not."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from ingest.batch_body import CSV, NDJSON
from ingest.importer import CHUNK_LINES, ImportFailed, Progress, Tally, chunks, media_of


def test_chunks_are_cut_by_physical_lines_and_map_the_servers_line_numbers_back() -> None:
    lines = [f'{{"n": {i}}}\n'.encode() for i in range(1, CHUNK_LINES + 3)]
    got = list(chunks(iter(lines), NDJSON))
    assert [c.index for c in got] == [0, 1]
    assert got[1].body == lines[CHUNK_LINES] + lines[CHUNK_LINES + 1]
    assert got[1].file_line(2) == CHUNK_LINES + 2


def test_a_csv_chunk_carries_the_header_and_its_line_1_is_the_header() -> None:
    lines = [b"timestamp,user,event\n", *(f"{i},u,click\n".encode() for i in range(CHUNK_LINES + 1))]
    got = list(chunks(iter(lines), CSV))
    assert all(c.body.startswith(b"timestamp,user,event\n") for c in got)
    assert got[0].file_line(2) == 2  # the first row is the file's line 2
    assert got[1].file_line(2) == CHUNK_LINES + 2
    assert next(chunks(iter([b"timestamp,user,event\n", b"1,u,click"]), CSV)).body.endswith(b"click\n")


@pytest.mark.parametrize(
    ("name", "media"),
    [
        ("a.ndjson", (NDJSON, False)),
        ("a.jsonl.gz", (NDJSON, True)),
        ("A.CSV", (CSV, False)),
        ("a.csv.gz", (CSV, True)),
    ],
)
def test_the_file_name_says_what_it_holds(name: str, media: tuple[str, bool]) -> None:
    assert media_of(Path(name)) == media


def test_a_file_name_that_says_nothing_is_refused_with_what_to_call_it() -> None:
    with pytest.raises(ImportFailed, match=r"name it \.ndjson, \.jsonl or \.csv"):
        media_of(Path("events.txt"))


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_redraws_one_line_on_a_terminal_and_prints_plain_lines_otherwise() -> None:
    now = iter(range(0, 100, 10))
    tally = Tally(accepted=500)
    tty = Terminal()
    bar = Progress(tty, 1000, clock=lambda: float(next(now)))
    bar.show("f.ndjson", tally, 500, final=True)
    assert tty.getvalue().startswith("\r[##########          ] f.ndjson: 500 accepted")
    assert "ETA 10 s" in tty.getvalue()
    plain = io.StringIO()
    Progress(plain, 1000, clock=lambda: 0.0).show("f.ndjson", tally, 1000, final=True)
    assert "\r" not in plain.getvalue()
    assert plain.getvalue().endswith("100%, ETA 0 s\n")
