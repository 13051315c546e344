"""Positions read from JetStream reply subjects, both forms (with and without domain and account)."""

from __future__ import annotations

from projector.pull import Meta, meta_of


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
