"""The batch parser: NDJSON and CSV lines into the events a single POST of each would be, refused lines
named by number without stopping the others, keys derived from the batch's, and both limits checked
while the body is read (a gzip bomb stops early)."""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.schema import MAX_KEY_CHARS, Event, Kind
from ingest.batch_body import (
    CSV,
    NDJSON,
    BatchLines,
    BatchReader,
    LineRules,
    Rejected,
    TooLarge,
    _json_fields,
    _plain,
)
from ingest.validation import parse_event
from server.failures import ParamError

NOW = 1_764_079_200_000
DAY = 86_400_000
DIMS = frozenset({"campaign", "creative", "site"})


def read(
    body: bytes,
    media: str = NDJSON,
    *,
    key: str | None = None,
    gzipped: bool = False,
    max_bytes: int = 1 << 20,
    max_events: int = 1000,
    chunk: int = 7,
) -> BatchLines:
    reader = BatchReader(media, gzipped, max_bytes, max_events, LineRules(NOW, DAY, DIMS, key))
    for at in range(0, len(body), chunk):
        reader.feed(body[at : at + chunk])
    return reader.finish()


def ndjson(*lines: Mapping[str, object]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def test_each_line_is_the_event_a_post_of_it_would_be() -> None:
    body = ndjson(
        {"timestamp": NOW, "user": "ann", "event": "click", "campaign": "spring", "site": "a.example"},
        {"timestamp": str(NOW - 1), "user": "bob", "event": "impression", "key": "k1"},
    )
    got = read(body)
    assert got.rejected == []
    assert got.events == [
        parse_event(
            f"timestamp={NOW}&user=ann&click&campaign=spring&site=a.example".encode(), NOW, DAY, None, DIMS
        ),
        Event(NOW - 1, "bob", Kind.IMPRESSION, "k1"),
    ]


def test_bad_lines_are_refused_by_number_and_the_others_still_count() -> None:
    body = (
        ndjson({"timestamp": NOW, "user": "ann", "event": "click"})
        + b"\n"  # a blank line: skipped, but counted in the numbering
        + ndjson(
            {"timestamp": NOW + 2 * DAY, "user": "bob", "event": "click"},
            {"timestamp": NOW, "user": "", "event": "click"},
            {"timestamp": NOW, "user": "cy", "event": "view"},
            {"timestamp": NOW, "user": "di", "event": "click", "campain": "x"},
            {"timestamp": NOW, "user": "ed", "event": "click", "key": "\u00e9"},
            {"timestamp": 1.5, "user": "fi", "event": "click"},
            {"timestamp": NOW, "user": "gu", "event": "impression"},
        )
    )
    got = read(body)
    assert [e.user for e in got.events] == ["ann", "gu"]
    assert [(r.line, r.error.partition(":")[0]) for r in got.rejected] == [
        (3, "timestamp"),
        (4, "user"),
        (5, "event"),
        (6, "campain"),
        (7, "key"),
        (8, "timestamp"),
    ]
    assert "did you mean campaign?" in got.rejected[3].error


def test_csv_takes_a_header_then_a_row_a_line_with_empty_cells_left_out() -> None:
    body = (
        b"user,timestamp,event,key,campaign\r\n"
        + f"ann,{NOW},click,,spring\r\n".encode()
        + f'"bob, jr",{NOW},impression,k2,\r\n'.encode()
        + f"cy,{NOW},click\r\n".encode()
    )
    got = read(body, CSV)
    assert got.events == [
        Event(NOW, "ann", Kind.CLICK, None, (("campaign", "spring"),)),
        Event(NOW, "bob, jr", Kind.IMPRESSION, "k2"),
    ]
    assert got.rejected == [Rejected(4, "line: has 3 cells; the header names 5 columns")]


def test_a_csv_header_without_the_event_columns_is_a_400_naming_the_line() -> None:
    with pytest.raises(ParamError, match=r"line 1: the CSV header must name .*\(missing: event\)"):
        read(b"timestamp,user\n1,ann\n", CSV)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"", "holds no events"),
        (b"\n\n", "holds no events"),
        (b'{"timestamp": 1}\n[1, 2]\n', "line 2 is not a JSON object"),
        (b"timestamp,user,event\n", "line 1 is not JSON"),
        (b'{"user": "\xff"}\n', "line 1 is not UTF-8"),
    ],
)
def test_a_body_that_is_not_ndjson_is_a_400_naming_the_line(body: bytes, says: str) -> None:
    with pytest.raises(ParamError, match=says) as caught:
        read(body)
    assert caught.value.param == "body"


def test_a_batch_key_gives_each_line_without_a_key_its_own_the_same_on_every_retry() -> None:
    body = ndjson(
        {"timestamp": NOW, "user": "ann", "event": "click"},
        {"timestamp": NOW, "user": "ann", "event": "click", "key": "own"},
        {"timestamp": NOW, "user": "ann", "event": "click"},
    )
    first, again = read(body, key="b-7"), read(body, key="b-7")
    assert [e.key for e in first.events] == ["b-7/1", "own", "b-7/3"]
    assert first.events == again.events
    assert [e.key for e in read(body).events] == [None, "own", None]


def test_a_derived_key_too_long_for_the_rules_is_a_digest_of_the_batch_key() -> None:
    rules = LineRules(NOW, DAY, DIMS, "k" * MAX_KEY_CHARS)
    assert rules.derived_key(10_000) != rules.derived_key(10_001)
    assert len(rules.derived_key(10_000)) <= MAX_KEY_CHARS


def test_a_line_repeating_an_earlier_lines_user_and_key_is_a_duplicate_not_an_event() -> None:
    line = {"timestamp": NOW, "user": "ann", "event": "click", "key": "same"}
    got = read(ndjson(line, line, {**line, "user": "bob"}))
    assert [e.user for e in got.events] == ["ann", "bob"]
    assert got.duplicates == 1


def test_gzip_is_read_as_it_comes() -> None:
    body = ndjson(*({"timestamp": NOW, "user": f"u{i}", "event": "click"} for i in range(300)))
    assert read(gzip.compress(body), gzipped=True, chunk=50).events == read(body).events


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"not gzip at all", "not valid gzip"),
        (gzip.compress(b'{"a": 1}\n')[:-6], "ends in the middle of its gzip stream"),
        (gzip.compress(b'{"a": 1}\n') + b"more", "data after the end"),
    ],
)
def test_a_broken_gzip_body_is_a_400(body: bytes, says: str) -> None:
    with pytest.raises(ParamError, match=says):
        read(body, gzipped=True)


def test_a_gzip_bomb_stops_one_byte_past_the_limit() -> None:
    bomb = gzip.compress(b"\n" * 50_000_000)  # 50 MB of blank lines in about 50 KB
    reader = BatchReader(NDJSON, True, 1000, 10, LineRules(NOW, DAY, DIMS))
    with pytest.raises(TooLarge, match="more than 1000 bytes") as caught:
        reader.feed(bomb)
    assert caught.value.setting == "ANALYTICS_BATCH_MAX_BYTES"
    assert reader._read == 1001  # what was inflated before it stopped


def test_one_event_past_the_limit_stops_the_read() -> None:
    body = ndjson(*({"timestamp": NOW, "user": f"u{i}", "event": "click"} for i in range(4)))
    assert len(read(body, max_events=4).events) == 4
    with pytest.raises(TooLarge, match="more than 3 events") as caught:
        read(body, max_events=3)
    assert caught.value.setting == "ANALYTICS_BATCH_MAX_EVENTS"


_users = st.text(
    st.characters(max_codepoint=0x2FF, blacklist_categories=("Cc", "Cs")), min_size=1, max_size=12
).filter(lambda u: not u.isspace())
_values = st.text("abcXYZ019._:/-", min_size=1, max_size=12)
_events = st.builds(
    Event,
    st.integers(0, NOW),
    _users,
    st.sampled_from(list(Kind)),
    st.none() | st.text("abc-_!~ 1", min_size=1, max_size=8).filter(lambda k: k.strip() == k),
    st.just(()) | st.builds(lambda v: (("campaign", v),), _values),
)


@settings(max_examples=60)
@given(
    st.lists(_events, min_size=1, max_size=20, unique_by=lambda e: (e.user, e.key or id(e))),
    st.integers(1, 64),
)
def test_any_events_written_as_ndjson_or_csv_read_back_the_same_in_any_chunks(
    events: list[Event], chunk: int
) -> None:
    lines = [
        {
            "timestamp": e.ts,
            "user": e.user,
            "event": e.kind.value,
            **({"key": e.key} if e.key else {}),
            **dict(e.dims),
        }
        for e in events
    ]
    assert read(ndjson(*lines), chunk=chunk).events == events
    columns = ("timestamp", "user", "event", "key", "campaign")
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(
        [columns, *([line.get(c, "") for c in columns] for line in lines)]
    )
    body = out.getvalue().encode()
    assert read(body, CSV, chunk=chunk).events == events


_FIELD_VALUES = st.one_of(
    st.integers(-5, NOW + 2 * DAY),
    st.sampled_from(
        ["", " ", "ann", "a\u00e9", "click", "impression", "view", "spring", "x y", "1764079200000"]
    ),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False),
)
_FIELD_NAMES = st.sampled_from(
    ["timestamp", "user", "event", "key", "campaign", "site", "campain", "click", "other"]
)


@settings(max_examples=300)
@given(
    st.fixed_dictionaries(
        {
            "timestamp": st.integers(0, NOW),
            "user": st.sampled_from(["ann", "a\u00e9"]),
            "event": _FIELD_VALUES,
        }
    ),
    st.dictionaries(_FIELD_NAMES, _FIELD_VALUES, max_size=4),
    st.sampled_from([None, "b-1"]),
)
def test_the_shortcut_answers_as_the_full_parse(
    valid: dict[str, object], changes: dict[str, object], batch_key: str | None
) -> None:
    line = {**valid, **changes}  # a valid line, often broken or widened by the changes
    rules = LineRules(NOW, DAY, DIMS, batch_key)
    plain = _plain(line, rules, 7)
    if plain is None:
        return
    reader = BatchReader(NDJSON, False, 1 << 20, 10, rules)
    assert reader._event(_json_fields(line), 7) == plain  # the full parse of the same line
