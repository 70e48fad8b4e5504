"""The one Kafka adapter of the project, on confluent-kafka (librdkafka).

    settings   KafkaSettings (from [kafka]: bootstrap servers, SASL, TLS), as_settings
    producer   Producer (produce, send -> DeliveryReport, flush, transactions), OutRecord
    consumer   Consumer (consume(n, timeout_s), assign/seek/position/watermarks, commit,
               cooperative-sticky rebalance callbacks, read_committed), Message, Partition
    admin      Admin (ensure_topics(TopicSpec...), partition counts, group offsets)

Every failure surfaces as ``spendstream.errors.KafkaClientError`` or a subclass
(``KafkaUnavailable``, ``KafkaAuthError``), never as a client library exception. Nothing
outside this package touches the client library, and nothing here touches a client's
private attributes (ruff's SLF rule is on for this package).

Importing ``spendstream.kafka`` is light: the client library loads when a client class is
first used, so ``spendstream.producers`` stays cheap to import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from spendstream.kafka.settings import KafkaSettings, as_settings

if TYPE_CHECKING:
    from spendstream.kafka.admin import Admin, TopicSpec
    from spendstream.kafka.consumer import Consumer, Message, Partition
    from spendstream.kafka.producer import DeliveryReport, OutRecord, Producer

__all__ = [
    "Admin",
    "Consumer",
    "DeliveryReport",
    "KafkaSettings",
    "Message",
    "OutRecord",
    "Partition",
    "Producer",
    "TopicSpec",
    "as_settings",
]

_LAZY = {
    "Admin": "admin",
    "TopicSpec": "admin",
    "Consumer": "consumer",
    "Message": "consumer",
    "Partition": "consumer",
    "DeliveryReport": "producer",
    "OutRecord": "producer",
    "Producer": "producer",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
