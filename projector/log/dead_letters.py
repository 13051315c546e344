"""Filing what the projector cannot apply (a rule-breaking event, a message that is no batch) in the
dead-letter stream, once per stream position."""

from __future__ import annotations

import logging

from nats.js import JetStreamContext

from contract import schema
from contract.stream import dead_letter_stream, dead_letter_subject
from deploy.settings import Settings
from projector import metrics
from projector.fold.rules import Rejected
from projector.log.fetched import Pulled

log = logging.getLogger("projector")


async def dead_letter(
    js: JetStreamContext, settings: Settings, partition: int, msg: Pulled, rejected: list[Rejected]
) -> None:
    """File each rejected part of a message in the dead-letter stream, awaiting its PubAck.

    The message id makes a second filing of the same dead letter (after a crash, or by a replay)
    a duplicate that JetStream drops within its duplicate window.
    """
    seq = msg.meta.stream_seq
    for index, reason in rejected:
        whole = index < 0
        payload = msg.data if whole else schema.encode_event(schema.decode(msg.data).events[index])
        headers = {
            "Nats-Msg-Id": f"{settings.stream_name}:{seq}:{index}",
            "Hourglass-Stream-Seq": str(seq),
            "Hourglass-Subject": msg.subject,
            "Hourglass-Event-Index": str(index),
            "Hourglass-Reason": " ".join(reason.split()),
        }
        await js.publish(
            dead_letter_subject(settings.stream_name, partition),
            payload,
            headers=headers,
            stream=dead_letter_stream(settings.stream_name),
        )
        metrics.DEAD_LETTERS.inc()
        what = "message" if whole else f"event {index} of message"
        log.warning(
            "p%d: dead-lettered %s at stream seq %d on %s: %s", partition, what, seq, msg.subject, reason
        )
