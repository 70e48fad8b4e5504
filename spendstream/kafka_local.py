"""Moved to ``spendstream.local.kafka`` (the local services live together); kept importable."""

from spendstream.local.kafka import *  # noqa: F403
from spendstream.local.kafka import __all__ as __all__
