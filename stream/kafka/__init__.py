"""The Kafka runtime: ``spendstream run``'s faust-streaming workers and their HTTP endpoints.

A shell around the pure core (``stream.pipeline``): stage 1 validates, dedupes, prices and
lands facts; stage 2 runs the detection engine over one ordered stream of priced facts.
See docs/kafka.md for the topology and its guarantees.
"""

from __future__ import annotations

__all__: list[str] = []
