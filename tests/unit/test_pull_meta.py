"""Positions read from JetStream reply subjects, both forms (with and without domain and account)."""

from __future__ import annotations

from projector.pull import Fetched, Meta, meta_of


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
