"""The per-event reference engine: the oracle the columnar engine is tested against."""

from tests.stream.reference.engine import ReferenceEngine

__all__ = ["ReferenceEngine"]
