"""JSON read off a wire (a Kafka record, an HTTP body), where every failure is a ValueError.

``json.loads`` raises ``RecursionError`` on nesting deeper than the interpreter's stack
(a few thousand ``[``: a record of a few kilobytes). That is not a ``ValueError``, so a
reader's ``except ValueError`` around its decoding let it through, and a consumer that
re-reads the record after a failure met it again on every try.

``json.loads`` also takes ``"\ud800"``: a lone surrogate, which no UTF-8 can carry.
A reader that hands the strings on to SQLite, a Kafka key or a reply failed later, with a
``UnicodeEncodeError``, outside its decoding (the alert router, the lease server).
``loads_text`` refuses them where the record is read.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["loads", "loads_text", "require_text"]


def loads(data: bytes | str) -> Any:
    """``json.loads(data)``; ``ValueError`` (``json.JSONDecodeError``, ``UnicodeDecodeError``,
    or one saying the nesting is too deep) for anything that is not JSON it can hold."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None


def loads_text(data: bytes | str) -> Any:
    """``loads``, and ``ValueError`` when a string (key or value) is not Unicode text."""
    return require_text(loads(data))


def require_text(value: Any) -> Any:
    """``value`` (as ``loads`` gives it); ``ValueError`` when a string in it, key or value,
    holds a lone surrogate, which UTF-8 cannot encode."""
    stack = [value]
    while stack:  # not recursive: the nesting may be as deep as json.loads reads
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode()
                except UnicodeEncodeError as exc:
                    bad = item[exc.start].encode("unicode_escape").decode()  # one is enough
                    raise ValueError(
                        f"a string holds {bad}, a lone surrogate: not Unicode text"
                    ) from None
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return value
