"""`spendstream kafka-local start|stop|status`: the implementation lives in spendstream.local.kafka."""

from spendstream.local.kafka import configure, run

__all__ = ["configure", "run"]
