"""spendstream: an event-streaming metering pipeline for LLM spend.

The package is a namespace for four subpackages that follow the data's path:
``spendstream.producers`` (a call becomes an event) -> Kafka -> ``spendstream.stream``
(an event becomes a priced fact, alerts and breaker changes) -> ``spendstream.warehouse``
(facts become answers) and ``spendstream.alerts`` (alerts reach people).
Importing this package is cheap: it imports none of them.
"""

from __future__ import annotations

from spendstream.errors import (
    BreakerOpen,
    ConfigError,
    KafkaLocalError,
    SpendstreamError,
    ToolMissingError,
)

__version__ = "0.1.0"

__all__ = [
    "BreakerOpen",
    "ConfigError",
    "KafkaLocalError",
    "SpendstreamError",
    "ToolMissingError",
    "__version__",
]
