from __future__ import annotations

import contextlib
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract.schema import Event, Kind
from ingest.validation import _plain, event_of, parse_event, parse_idempotency_key
from server.failures import ParamError
from server.params import parse_query, parse_timestamp

NOW = 1_764_079_200_000  # 2025-11-25T14:00Z
DAY = 86_400_000


def parse(query: str, now: int = NOW) -> Event:
    return parse_event(query.encode(), now_ms=now, future_skew_ms=DAY)


def refused(query: str) -> ParamError:
    with pytest.raises(ParamError) as info:
        parse(query)
    return info.value


def test_seed_example_is_valid() -> None:
    assert parse("timestamp=123&user=kek&click") == Event(123, "kek", Kind.CLICK)


def test_impression_flag_and_event_parameter_are_accepted() -> None:
    assert parse("timestamp=1&user=u&impression").kind is Kind.IMPRESSION
    assert parse("timestamp=1&user=u&event=click").kind is Kind.CLICK
    assert parse("timestamp=1&user=u&event=impression&impression").kind is Kind.IMPRESSION


def test_user_is_percent_decoded() -> None:
    assert parse("timestamp=1&user=a%20b%C3%A9&click").user == "a bé"


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("user=kek&click", "timestamp"),
        ("timestamp=&user=kek&click", "timestamp"),
        ("timestamp=abc&user=kek&click", "timestamp"),
        ("timestamp=1e12&user=kek&click", "timestamp"),
        ("timestamp=-5&user=kek&click", "timestamp"),
        ("timestamp=12.5&user=kek&click", "timestamp"),
        ("timestamp=+5&user=kek&click", "timestamp"),
        ("timestamp=%205&user=kek&click", "timestamp"),
        ("timestamp=0x10&user=kek&click", "timestamp"),
        ("timestamp=99999999999999999999&user=kek&click", "timestamp"),
        ("timestamp=9223372036854775808&user=kek&click", "timestamp"),
        ("timestamp=1&timestamp=2&user=kek&click", "timestamp"),
        ("timestamp=1&click", "user"),
        ("timestamp=1&user=&click", "user"),
        ("timestamp=1&user=a%00b&click", "user"),
        ("timestamp=1&user=a%0Ab&click", "user"),
        ("timestamp=1&user=a%7Fb&click", "user"),
        ("timestamp=1&user=a%C2%85b&click", "user"),
        ("timestamp=1&user=" + "x" * 257 + "&click", "user"),
        ("timestamp=1&user=a&user=b&click", "user"),
        ("timestamp=1&user=kek", "event"),
        ("timestamp=1&user=kek&clik", "event"),
        ("timestamp=1&user=kek&click&impression", "event"),
        ("timestamp=1&user=kek&event=click&impression", "event"),
        ("timestamp=1&user=kek&event=view", "event"),
        ("timestamp=1&user=kek&click=0", "click"),
        ("timestamp=1&user=%FF&click", "query"),
    ],
)
def test_bad_input_names_the_parameter(query: str, param: str) -> None:
    assert refused(query).param == param


def test_user_of_256_bytes_is_accepted_but_not_257() -> None:
    assert parse("timestamp=1&click&user=" + quote("é" * 128)).user == "é" * 128
    assert refused("timestamp=1&click&user=" + quote("é" * 128 + "x")).param == "user"


def test_future_timestamps_beyond_the_skew_are_refused() -> None:
    assert parse(f"timestamp={NOW + DAY}&user=u&click").ts == NOW + DAY
    error = refused(f"timestamp={NOW + DAY + 1}&user=u&click")
    assert error.param == "timestamp"
    assert "future" in error.problem
    micros = refused(f"timestamp={NOW * 1000}&user=u&click")
    assert "micro" in micros.problem


@given(st.binary(max_size=300))
def test_any_query_bytes_either_parse_or_raise_param_error(raw: bytes) -> None:
    with contextlib.suppress(ParamError):
        parse_event(raw, now_ms=NOW, future_skew_ms=DAY)


def test_get_timestamp_refuses_negative_and_non_integer() -> None:
    for bad in ("", "timestamp=-1", "timestamp=x", "timestamp=1.0"):
        with pytest.raises(ParamError):
            parse_timestamp(parse_query(bad.encode()))
    assert parse_timestamp(parse_query(b"timestamp=007")) == 7


def test_idempotency_key_must_be_printable_ascii_up_to_128() -> None:
    assert parse_idempotency_key(None) is None
    assert parse_idempotency_key("a" * 128) == "a" * 128
    for bad in ("", "a" * 129, "é", "a\tb"):
        with pytest.raises(ParamError):
            parse_idempotency_key(bad)


DIMS = frozenset({"campaign", "creative", "site"})

# parse_event reads plain queries on a shortcut: it must answer exactly as its full parse would.
_PARTS = st.sampled_from(
    [
        "timestamp=123",
        "timestamp=",
        "timestamp=-5",
        "timestamp=0009",
        f"timestamp={NOW + DAY + 1}",
        "timestamp=99999999999999999999",
        "timestamp=253402300800000",
        "user=kek",
        "user=",
        "user= ",
        "user=a=b",
        "user=%41",
        "user=a+b",
        "user=\x01",
        "user=" + "u" * 300,
        "click",
        "click=",
        "click=1",
        "impression",
        "event=click",
        "other=1",
        "",
        "=x",
        "campaign=spring-sale",
        "campaign=summer",
        "campaign=",
        "campaign=%41",
        "campaign=a:b/c.d_e-f",
        "campaign=" + "x" * 65,
        "creative=c12",
        "site=example.com",
        "site=a,b",
        "region=eu",
        "_cb=123",
        "Campaign=x",
        "campain=x",
    ]
)


@given(st.lists(_PARTS, max_size=6), st.sampled_from([None, "k-1"]))
def test_the_shortcut_answers_as_the_full_parse(parts: list[str], key: str | None) -> None:
    raw = "&".join(parts).encode()
    answers: list[Event | str] = []
    for parse in (parse_event, lambda *args: event_of(parse_query(args[0]), *args[1:])):
        try:
            answers.append(parse(raw, NOW, DAY, key, DIMS))
        except ParamError as exc:
            answers.append(str(exc))
    assert answers[0] == answers[1]


@given(
    st.integers(0, NOW + DAY),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="%+&="), min_size=1),
    st.sampled_from(["click", "impression"]),
    st.permutations([0, 1, 2]),
)
def test_every_plain_valid_post_is_the_event_it_names(
    ts: int, user: str, kind: str, order: list[int]
) -> None:
    parts = [f"timestamp={ts}", f"user={user}", kind]
    raw = "&".join(parts[i] for i in order).encode()
    assert parse_event(raw, now_ms=NOW, future_skew_ms=DAY) == Event(ts, user, Kind(kind))
    assert _plain(raw, NOW, DAY, None, DIMS) is not None  # on the shortcut


def test_declared_dimensions_ride_on_the_event_sorted_by_name() -> None:
    raw = b"timestamp=5&user=u&click&site=example.com&campaign=spring-sale"
    event = parse_event(raw, NOW, DAY, None, DIMS)
    assert event.dims == (("campaign", "spring-sale"), ("site", "example.com"))
    assert _plain(raw, NOW, DAY, None, DIMS) == event  # the shortcut reads them too
    assert parse_event(b"timestamp=5&user=u&click", NOW, DAY, None, DIMS).dims == ()


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("campaign=", "campaign: must be 1-64 characters"),
        ("campaign=" + "x" * 65, "campaign: must be 1-64 characters"),
        ("campaign=a%20b", "campaign: must be 1-64 characters"),
        ("campaign=a&campaign=b", "campaign: is given more than once"),
        ("campain=x", "campain: is not a declared dimension; did you mean campaign? (ANALYTICS_DIMENSIONS: "),
        ("Site=x", "Site: is not a declared dimension; did you mean site?"),
        ("creatives=x", "creatives: is not a declared dimension; did you mean creative?"),
    ],
)
def test_a_bad_or_undeclared_dimension_is_a_400_naming_it(query: str, names: str) -> None:
    with pytest.raises(ParamError) as raised:
        parse_event(f"timestamp=5&user=u&click&{query}".encode(), NOW, DAY, None, DIMS)
    assert str(raised.value).startswith(names)


@pytest.mark.parametrize("other", ["_=17", "utm_source=mail", "size=3", "region=eu"])
def test_parameters_unlike_any_dimension_are_ignored_as_pixels_send_them(other: str) -> None:
    assert parse_event(f"timestamp=5&user=u&click&{other}".encode(), NOW, DAY, None, DIMS).dims == ()
