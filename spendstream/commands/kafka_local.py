"""`spendstream kafka-local start|stop|status`: the implementation lives in spendstream.kafka_local."""

from spendstream.kafka_local import configure, run

__all__ = ["configure", "run"]
