"""JSON read off a wire (a Kafka record, an HTTP body), where every failure is a ValueError.

``json.loads`` raises ``RecursionError`` on nesting deeper than the interpreter's stack
(a few thousand ``[``: a record of a few kilobytes). That is not a ``ValueError``, so a
reader's ``except ValueError`` around its decoding let it through, and a consumer that
re-reads the record after a failure met it again on every try.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["loads"]


def loads(data: bytes | str) -> Any:
    """``json.loads(data)``; ``ValueError`` (``json.JSONDecodeError``, ``UnicodeDecodeError``,
    or one saying the nesting is too deep) for anything that is not JSON it can hold."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None
