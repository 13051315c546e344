"""What a breakdown or a filtered read asks for, which rows it shows and how they read (pure)."""

from __future__ import annotations

import msgspec
import pytest

from api.breakdown import (
    BreakdownQuery,
    Filter,
    Filtered,
    Sort,
    chosen,
    parse_breakdown,
    render_csv,
    render_json,
    value_axes,
)
from api.ranges import FilteredRange, RangeQuery, parse_read
from contract.buckets import quarter_token
from contract.hours import hour_token
from server.failures import ParamError
from server.params import parse_query

DIMS = frozenset({"campaign", "creative", "site"})
PAIRS = frozenset({("campaign", "creative")})


SPLIT = frozenset({18})
"""Asia/Kolkata's day starts at 18:30 UTC: that hour keeps its breakdowns per quarter-hour too."""
HOUR = 3_600_000
ONE = (hour_token(0),)


def breakdown(raw: str) -> BreakdownQuery:
    return parse_breakdown(parse_query(raw.encode()), DIMS, PAIRS, SPLIT)


def test_a_breakdown_defaults_to_the_top_twenty_by_clicks_of_the_timestamps_hour() -> None:
    want = BreakdownQuery("campaign", (hour_token(2),), (2 * HOUR, 3 * HOUR), Sort.CLICKS, 20)
    assert breakdown("by=campaign&timestamp=7200000") == want
    assert breakdown("by=site&timestamp=1&sort=ctr&top=1000").top == 1000


def test_a_period_covers_every_utc_hour_starting_from_froms_hour_and_before_to() -> None:
    hour = HOUR
    q = breakdown(f"by=campaign&from={2 * hour + 5}&to={5 * hour + 1}")
    assert (q.cells, q.span, q.one_hour) == (tuple(map(hour_token, range(2, 6))), (2 * hour, 6 * hour), False)
    assert breakdown(f"by=campaign&from={2 * hour}&to={5 * hour}").cells == tuple(
        map(hour_token, range(2, 5))
    )
    empty = breakdown(f"by=campaign&from={2 * hour + 5}&to={2 * hour}")
    assert (empty.cells, empty.span) == ((), None)
    assert len(breakdown(f"by=campaign&from=0&to={744 * hour}").cells) == 744


def test_a_period_in_a_zone_covers_its_local_days_with_quarter_hours_where_they_start_inside_hours() -> None:
    day = 24 * HOUR
    start = 20 * day + 18 * HOUR + 30 * 60_000  # a Kolkata midnight, 18:30 UTC
    q = breakdown(f"by=campaign&from={start + 5}&to={start + day + 1}&tz=Asia/Kolkata")
    assert q.span == (start, start + 2 * day)
    first = 20 * 24 + 18
    assert q.cells[:3] == (quarter_token(first, 2), quarter_token(first, 3), hour_token(first + 1))
    assert q.cells[-3:] == (
        hour_token(first + 47),
        quarter_token(first + 48, 0),
        quarter_token(first + 48, 1),
    )
    assert len(q.cells) == 2 + 47 + 2  # the hour between the two days is whole
    new_york = breakdown(f"by=campaign&from={20 * day}&to={20 * day + 1}&tz=America/New_York")
    assert len(new_york.cells) == 24
    assert all(len(token) == len(hour_token(0)) for token in new_york.cells)  # its days are UTC hours


@pytest.mark.parametrize(
    ("raw", "param", "says"),
    [
        ("timestamp=1", "by", "is required"),
        ("by=country&timestamp=1", "by", "not a declared dimension (campaign, creative, site)"),
        ("by=campaign", "timestamp", "is required"),
        ("by=campaign&timestamp=1&top=0", "top", "from 1 to 1000"),
        ("by=campaign&timestamp=1&top=1001", "top", "from 1 to 1000"),
        ("by=campaign&timestamp=1&top=ten", "top", "from 1 to 1000"),
        ("by=campaign&timestamp=1&sort=users", "sort", "unique_users|clicks|impressions|ctr"),
        ("by=campaign&from=1", "to", "is required"),
        ("by=campaign&timestamp=1&from=1&to=2", "timestamp", "not both"),
        (f"by=campaign&from=0&to={745 * 3_600_000}", "to", "at most 744 hours"),
        ("by=campaign&from=0&to=1&tz=Asia/Tehran", "tz", "ANALYTICS_DAY_ZONES"),  # days from 20:30 UTC
        ("by=campaign&from=0&to=1&tz=Mars/Base", "tz", "Mars/Base"),
        (f"by=campaign&from=0&to={33 * 24 * 3_600_000}&tz=Asia/Kolkata", "to", "at most 31 days"),
        ("by=site&timestamp=1&campaign=x", "campaign", "ANALYTICS_DIMENSION_PAIRS: campaign:creative"),
        ("by=campaign&timestamp=1&creative=x", "creative", "first dimension of a declared pair"),
        ("by=creative&timestamp=1&campaign=x&site=y", "site", "one filter"),
        ("by=campaign&timestamp=1&Site=x", "Site", "did you mean site"),
    ],
)
def test_a_bad_breakdown_is_a_400_naming_the_parameter(raw: str, param: str, says: str) -> None:
    with pytest.raises(ParamError) as caught:
        breakdown(raw)
    assert caught.value.param == param
    assert says in caught.value.problem


def test_a_breakdown_by_a_pairs_second_dimension_may_be_filtered_by_a_value_of_its_first() -> None:
    q = breakdown("by=creative&timestamp=1&campaign=spring")
    assert q.within == Filter("campaign", "spring")
    assert q.axis("c12") == "campaign+creative=spring+c12"
    assert value_axes(q, ["c12"]) == [
        "campaign+creative=spring+c12",
        "campaign+creative=spring+(none)",
        "campaign+creative=spring+(other)",
    ]
    assert value_axes(breakdown("by=creative&timestamp=1"), []) == [
        "creative=(none)|(none)",  # unfiltered, (none) also holds the events with no dimension at all
        "creative=(other)",
    ]


def test_a_read_with_a_dimension_is_filtered_to_one_value_of_an_hour_or_a_utc_range() -> None:
    assert parse_read(b"timestamp=5&campaign=spring", 10, DIMS) == Filtered(5, Filter("campaign", "spring"))
    assert parse_read(b"timestamp=5&campaign=spring", 10) == 5  # no dimensions declared: ignored
    assert isinstance(parse_read(b"from=0&to=7200000", 10, DIMS), RangeQuery)
    ranged = parse_read(b"from=0&to=7200000&campaign=x", 10, DIMS)
    assert isinstance(ranged, FilteredRange)
    assert (ranged.cells, ranged.only) == (((hour_token(0),), (hour_token(1),)), Filter("campaign", "x"))
    kolkata = parse_read(b"from=0&to=7200000&campaign=x&tz=Asia/Kolkata&granularity=day", 10, DIMS, SPLIT)
    assert isinstance(kolkata, FilteredRange)
    assert kolkata.cells[0][:2] == (quarter_token(-6, 2), quarter_token(-6, 3))  # 1969-12-31T18:30Z
    for raw, param in [
        (b"from=0&to=7200000&campaign=x&tz=Asia/Kolkata", "tz"),  # its hours start inside UTC hours
        (f"from=0&to={745 * 3_600_000}&campaign=x".encode(), "to"),
        (b"timestamp=5&campaign=x&site=y", "site"),
        (b"timestamp=5&campaign=a%20b", "campaign"),
    ]:
        with pytest.raises(ParamError) as caught:
            parse_read(raw, 10, DIMS)
        assert caught.value.param == param


def test_rows_are_chosen_by_the_sort_ties_by_value() -> None:
    counts = {"b": (5, 10), "a": (5, 50), "c": (1, 1), "d": (0, 0)}
    hour, span = ONE, (0, HOUR)
    q = BreakdownQuery("campaign", hour, span, top=3)
    assert chosen(q, counts) == ["a", "b", "c"]
    assert chosen(BreakdownQuery("campaign", hour, span, Sort.CTR), counts) == ["c", "b", "a", "d"]
    assert chosen(BreakdownQuery("campaign", hour, span, Sort.IMPRESSIONS, 1), counts) == ["a"]
    users = {"a": 1, "b": 9, "c": 3, "d": 0}
    assert chosen(BreakdownQuery("campaign", hour, span, Sort.UNIQUE_USERS), counts, users) == [
        "b",
        "c",
        "a",
        "d",
    ]


def test_a_breakdown_reads_as_csv_with_ctr_or_as_json() -> None:
    q = BreakdownQuery("campaign", ONE, (0, HOUR))
    rows = [("spring", (3, 1, 4)), ("(none)", (2, 0, 0)), ("(other)", (0, 0, 0))]
    assert render_csv(q, rows, (5, 1, 4)) == (
        b"campaign,unique_users,clicks,impressions,ctr\n"
        b"spring,3,1,4,0.2500\n(none),2,0,0,\n(other),0,0,0,\ntotal,5,1,4,0.2500\n"
    )
    body = msgspec.json.decode(render_json(q, rows, (5, 1, 4)))
    assert body["by"] == "campaign"
    assert body["rows"][0] == {
        "value": "spring",
        "unique_users": 3,
        "clicks": 1,
        "impressions": 4,
        "ctr": 0.25,
    }
    assert body["rows"][1]["ctr"] is None
    assert body["total"]["value"] == "total"
