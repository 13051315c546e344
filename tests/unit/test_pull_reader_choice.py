"""Which pull reader a connection gets: the fast one only when every nats-py internal it hooks is there."""

from __future__ import annotations

import logging

import pytest
from nats.aio.client import Client as NATS

from projector.log.parser_tap import missing_internals
from projector.log.pull import uses_fast_reader
from tests.helpers import metric


def test_nats_py_as_pinned_has_every_internal_the_fast_reader_hooks() -> None:
    assert missing_internals(NATS()) == []


def test_the_fast_reader_when_everything_is_there(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="projector")
    assert uses_fast_reader(NATS(), "auto") is True
    assert metric("hourglass_projector_pull_reader_fallback") == 0
    assert not caplog.records


@pytest.mark.parametrize(
    ("break_it", "named"),
    [
        (lambda nc: delattr(nc._ps, "needed"), "Client._ps.needed"),
        (lambda nc: setattr(nc._ps, "msg_arg", None), "Client._ps.msg_arg"),
        (lambda nc: delattr(nc, "_ps"), "Client._ps"),
        (lambda nc: setattr(nc, "_process_msg", lambda sid: None), "Client._process_msg"),
    ],
)
def test_a_missing_internal_selects_the_public_reader_with_one_warning(
    break_it: object, named: str, caplog: pytest.LogCaptureFixture
) -> None:
    nc = NATS()
    break_it(nc)  # type: ignore[operator]
    caplog.set_level(logging.INFO, logger="projector")
    assert uses_fast_reader(nc, "auto") is False
    assert uses_fast_reader(nc, "auto") is False  # decided once per connection
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert named in warnings[0].getMessage()
    assert metric("hourglass_projector_pull_reader_fallback") == 1


def test_forced_fast_refuses_without_the_internals() -> None:
    nc = NATS()
    del nc._ps.needed
    with pytest.raises(RuntimeError, match=r"Client\._ps\.needed"):
        uses_fast_reader(nc, "fast")


def test_forced_public_needs_no_internals(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="projector")
    nc = NATS()
    del nc._ps
    assert uses_fast_reader(nc, "public") is False
    assert not caplog.records
