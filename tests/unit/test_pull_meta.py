"""Positions read from JetStream reply subjects, both forms (with and without domain and account)."""

from __future__ import annotations

from projector.log.fetched import Fetched, Meta, meta_of
from projector.log.parser_tap import _Inbox, _take_frames


def test_the_short_reply_form_is_read() -> None:
    reply = "$JS.ACK.ANALYTICS.projector-p0.1.1234.17.1764079200123456789.42"
    assert meta_of(reply) == Meta(
        stream_seq=1234, consumer_seq=17, delivered=1, stream_ms=1764079200123, pending=42
    )


def test_the_long_reply_form_with_domain_and_account_is_read() -> None:
    reply = "$JS.ACK.hub.ACCHASH.ANALYTICS.projector-p0.2.1234.17.1764079200123456789.0.tok"
    assert meta_of(reply) == Meta(
        stream_seq=1234, consumer_seq=17, delivered=2, stream_ms=1764079200123, pending=0
    )


def test_fetched_columns_hold_what_meta_of_reads_from_either_form() -> None:
    replies = [
        "$JS.ACK.ANALYTICS.projector-p0.1.1234.17.1764079200123456789.42",
        "$JS.ACK.hub.ACCHASH.ANALYTICS.projector-p0.2.1235.18.1764079200999456789.0.tok",
    ]
    fetched = Fetched()
    for reply in replies:
        fetched.add(b"analytics.events.2025112513.0", reply.encode(), b"{}")
    assert [fetched.at(i).meta for i in range(2)] == [meta_of(r) for r in replies]
    assert (fetched.seqs, fetched.consumer_seqs, fetched.delivered) == ([1234, 1235], [17, 18], [1, 2])
    assert fetched.stamps == [1764079200123, 1764079200999]
    assert fetched.pending == 0
    head = fetched.head(1)
    assert (len(head), head.seqs, head.subjects) == (1, [1234], ["analytics.events.2025112513.0"])


def test_leading_frames_of_tapped_inboxes_are_cut_from_the_read_buffer_and_nothing_else() -> None:
    inbox = _Inbox()
    buffer = bytearray(
        b"MSG a.b 7 $JS.ACK.x 3\r\nabc\r\n"
        b"MSG a.c 7 0\r\n\r\n"
        b"MSG other 9 2\r\nhi\r\n"  # another subscription's: nats-py's parser takes it from here
        b"MSG a.d 7 5\r\nxy"
    )
    assert _take_frames(buffer, {7: inbox}) == (2, False)
    assert list(inbox.arrived) == [(b"a.b", b"$JS.ACK.x", b"abc"), (b"a.c", b"", b"")]
    assert buffer == bytearray(b"MSG other 9 2\r\nhi\r\nMSG a.d 7 5\r\nxy")

    split = bytearray(b"MSG a.d 7 5\r\nxy")  # the rest of the payload is still on its way
    assert _take_frames(split, {7: inbox}) == (0, True)
    assert split == bytearray(b"MSG a.d 7 5\r\nxy")
    split += b"zzz\r\nPING\r\n"
    assert _take_frames(split, {7: inbox}) == (1, False)
    assert inbox.arrived[-1] == (b"a.d", b"", b"xyzzz")
    assert split == bytearray(b"PING\r\n")
    line = bytearray(b"MSG a.e 7 $JS.ACK")  # even the first line is not all here yet
    assert _take_frames(line, {7: inbox}) == (0, True)
