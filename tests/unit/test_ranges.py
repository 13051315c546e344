"""Range reads, pure: buckets, labels, limits and the two renderings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.ranges import Granularity, RangeQuery, parse_range, render_csv, render_json
from contract.hours import HOUR_MS
from server.failures import ParamError

H = 493_910  # 2026-05-06T14:00Z, in hours since the epoch


def q(**params: str) -> dict[str, list[str]]:
    return {k: [v] for k, v in params.items()}


def test_from_is_rounded_down_and_to_is_exclusive() -> None:
    r = parse_range(q(**{"from": str(H * HOUR_MS + 59_000), "to": str((H + 3) * HOUR_MS)}), 100)
    assert r.granularity is Granularity.HOUR
    assert r.buckets == ((H,), (H + 1,), (H + 2,))
    r = parse_range(q(**{"from": str(H * HOUR_MS), "to": str((H + 3) * HOUR_MS + 1)}), 100)
    assert len(r.buckets) == 4


def test_days_are_utc_days_of_24_hours() -> None:
    day_start = H // 24 * 24
    r = parse_range(
        q(**{"from": str(H * HOUR_MS), "to": str((day_start + 48) * HOUR_MS), "granularity": "day"}), 10
    )
    assert r.buckets == (
        tuple(range(day_start, day_start + 24)),
        tuple(range(day_start + 24, day_start + 48)),
    )


@given(st.integers(min_value=0, max_value=10**13), st.integers(min_value=1, max_value=500 * HOUR_MS))
def test_every_bucket_starts_inside_the_range_and_none_is_missed(start: int, length: int) -> None:
    r = parse_range(q(**{"from": str(start), "to": str(start + length)}), 10_000)
    hours = [b[0] for b in r.buckets]
    assert hours == list(range(start // HOUR_MS, hours[-1] + 1))
    assert hours[-1] * HOUR_MS < start + length <= (hours[-1] + 1) * HOUR_MS


def empty_answers(r: RangeQuery, granularity: str) -> None:
    assert (r.spans, r.labels, r.buckets) == ((), (), ())
    header = f"{granularity},unique_users,clicks,impressions"
    assert render_csv(r, [], (0, 0, 0)).decode() == f"{header}\ntotal,0,0,0\n"
    assert (
        render_json(r, [], (0, 0, 0))
        == (
            f'{{"granularity":"{granularity}","buckets":[],'
            '"total":{"unique_users":0,"clicks":0,"impressions":0}}'
        ).encode()
    )


@pytest.mark.parametrize("granularity", ["hour", "day"])
@pytest.mark.parametrize("tz", ["", "UTC", "Asia/Kolkata", "America/St_Johns"])
@pytest.mark.parametrize(
    ("start", "end"), [((H + 48) * HOUR_MS, H * HOUR_MS), (10**13, 0)], ids=["days before", "far before"]
)
def test_a_to_before_from_is_an_empty_range_not_an_error(
    granularity: str, tz: str, start: int, end: int
) -> None:
    query = q(**{"from": str(start), "to": str(end), "granularity": granularity, "tz": tz})
    empty_answers(parse_range(query, 10), granularity)


@pytest.mark.parametrize(
    ("tz", "granularity", "at"),
    [
        ("UTC", "hour", 0),
        ("UTC", "day", 0),
        ("UTC", "hour", H * HOUR_MS),
        ("Asia/Kolkata", "hour", H * HOUR_MS + 30 * 60_000),
        ("Asia/Kathmandu", "day", (H // 24 * 24 + 24) * HOUR_MS - (5 * 60 + 45) * 60_000),
    ],
)
def test_to_equal_to_from_at_a_bucket_start_is_an_empty_range(tz: str, granularity: str, at: int) -> None:
    """`from=0&to=0` among them: the OpenAPI document admits it, so it is answered, with no rows."""
    empty_answers(
        parse_range(q(**{"from": str(at), "to": str(at), "granularity": granularity, "tz": tz}), 10),
        granularity,
    )
    one = parse_range(q(**{"from": str(at), "to": str(at + 1), "granularity": granularity, "tz": tz}), 10)
    assert [s for s, _ in one.spans] == [at]


@pytest.mark.parametrize(
    ("params", "param", "says"),
    [
        ({"from": "1"}, "to", "is required"),
        ({"to": "1"}, "from", "is required"),
        ({"from": "x", "to": "1"}, "from", "plain decimal"),
        ({"from": "0", "to": "1", "granularity": "week"}, "granularity", "'hour' or 'day'"),
        ({"from": "0", "to": str(11 * HOUR_MS)}, "to", "at most 10 (ANALYTICS_RANGE_MAX_BUCKETS)"),
        ({"from": "0", "to": "1", "timestamp": "1"}, "timestamp", "not both"),
    ],
)
def test_bad_ranges_are_400s_naming_the_parameter(params: dict[str, str], param: str, says: str) -> None:
    with pytest.raises(ParamError) as caught:
        parse_range(q(**params), 10)
    assert caught.value.param == param
    assert says in str(caught.value)


def test_csv_has_a_header_a_row_per_bucket_and_the_total_last() -> None:
    r = parse_range(q(**{"from": str(H * HOUR_MS), "to": str((H + 2) * HOUR_MS)}), 10)
    body = render_csv(r, [(120, 300, 400), (98, 250, 310)], (170, 550, 710)).decode()
    assert body == (
        "hour,unique_users,clicks,impressions\n"
        "2026-05-06T14:00:00Z,120,300,400\n"
        "2026-05-06T15:00:00Z,98,250,310\n"
        "total,170,550,710\n"
    )
    days = parse_range(
        q(**{"from": str(H * HOUR_MS), "to": str((H + 1) * HOUR_MS), "granularity": "day"}), 10
    )
    assert render_csv(days, [(1, 2, 3)], (1, 2, 3)).decode().splitlines()[:2] == [
        "day,unique_users,clicks,impressions",
        "2026-05-06,1,2,3",
    ]
    assert b'"start":"2026-05-06"' in render_json(days, [(1, 2, 3)], (1, 2, 3))
