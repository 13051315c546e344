"""The pull reader's cut through nats-py's protocol parser: whatever way reads split the bytes, its
inboxes get exactly their frames, in order, and everything else still reaches nats-py."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client as NATS

from projector.log.parser_tap import _Inbox, _taps

FRAMES = st.lists(st.sampled_from(["ours", "ours-no-reply", "theirs", "ok", "status"]), max_size=12)
CUTS = st.lists(st.integers(min_value=0, max_value=400), max_size=25)


@given(FRAMES, CUTS)
async def test_an_inbox_gets_exactly_its_frames_however_the_reads_split_them(
    kinds: list[str], cuts: list[int]
) -> None:
    nc = NATS()
    inbox = _Inbox()
    _taps(nc)[7] = inbox
    data, expected = b"", []
    for i, kind in enumerate(kinds):
        payload = b"p%d." % i * (i % 4)
        if kind == "ours":
            data += b"MSG s.%d 7 r.%d %d\r\n%s\r\n" % (i, i, len(payload), payload)
            expected.append((b"s.%d" % i, b"r.%d" % i, payload))
        elif kind == "ours-no-reply":
            data += b"MSG s.%d 7 %d\r\n%s\r\n" % (i, len(payload), payload)
            expected.append((b"s.%d" % i, b"", payload))
        elif kind == "theirs":
            data += b"MSG t.%d 9 %d\r\n%s\r\n" % (i, len(payload), payload)
        elif kind == "ok":
            data += b"+OK\r\n"
        else:  # a JetStream status for our inbox: headers, no payload, no reply
            headers = b"NATS/1.0 404 No Messages\r\n\r\n"
            data += b"HMSG s.%d 7 %d %d\r\n%s\r\n" % (i, len(headers), len(headers), headers)
            expected.append((b"s.%d" % i, b"", b""))
    at = 0
    for cut in [*sorted({c for c in cuts if c < len(data)}), len(data)]:
        await nc._ps.parse(data[at:cut])
        at = cut
    assert [tuple(bytes(part) for part in frame) for frame in inbox.arrived] == expected
    assert not nc._ps.buf
