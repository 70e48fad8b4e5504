"""The committed JSON Schema of the usage event, for producers written in other languages.

Regenerate after changing the model: ``python -m spendstream.producers.schema``;
``--check`` exits 1 when the committed file and the model have drifted apart.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from spendstream.producers.event import UsageEvent

__all__ = ["SCHEMA_PATH", "json_schema", "main", "render"]

SCHEMA_PATH = Path(__file__).with_name("usage-event.schema.json")
# Year 2015 or later, date, "T", time, an optional fraction, then Z or an offset.
TS_PATTERN = (
    r"^(201[5-9]|20[2-9][0-9]|2[1-9][0-9]{2}|[3-9][0-9]{3})-[0-9]{2}-[0-9]{2}[Tt]"
    r"[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
# A decimal as JSON writes one; a minus sign only on a zero ("-0", "-0.00"): the pipeline
# takes that as 0, and a negative amount is refused by the minimum.
DECIMAL_PATTERN = r"^(\+?([0-9]+\.?[0-9]*|\.[0-9]+)|-(0+\.?0*|\.0+))([eE][+-]?[0-9]+)?$"
_DRAFT = "https://json-schema.org/draft/2020-12/schema"


def json_schema() -> dict[str, Any]:
    """The schema a producer must satisfy (validation mode: what the pipeline accepts)."""
    schema = UsageEvent.model_json_schema(mode="validation")
    schema["$schema"] = _DRAFT
    props = schema["properties"]
    # What pydantic's schema leaves to "format" or to a validator, written as patterns, so a
    # JSON Schema validator refuses what the pipeline would (format is not enforced by
    # most validators without an extra package): an RFC 3339 time with its offset from
    # 2015 on, a decimal string of money, tool names as the model restricts them.
    props["ts"]["pattern"] = TS_PATTERN
    for branch in props["reported_cost_usd"]["anyOf"]:
        if branch.get("type") == "string":
            branch["pattern"] = DECIMAL_PATTERN
    for branch in props["tool_requests"]["anyOf"]:
        if branch.get("type") == "object":
            (names,) = branch["patternProperties"]
            branch["propertyNames"]["pattern"] = names
    # pydantic cannot express the cross-field rule; say it where other-language users read.
    schema["description"] = (
        "One metered AI API call (docs/producers.md). Invariants not expressible "
        "in JSON Schema: cache_read_tokens + cache_write_tokens <= input_tokens; "
        "cache_write_1h_tokens <= cache_write_tokens; cache_audio_read_tokens <= "
        "input_audio_tokens; cache_image_read_tokens <= input_image_tokens; "
        "cache_audio_read_tokens + cache_image_read_tokens <= cache_read_tokens; "
        "input_audio_tokens + input_image_tokens <= input_tokens; (input_audio_tokens - "
        "cache_audio_read_tokens) + (input_image_tokens - cache_image_read_tokens) <= "
        "input_tokens - cache_read_tokens - cache_write_tokens; output_audio_tokens + "
        "output_image_tokens <= output_tokens."
    )
    return schema


def render() -> str:
    """The schema file's exact text: sorted keys, so regeneration gives stable diffs."""
    return json.dumps(json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    from spendstream.generated_file import write_or_check

    args = sys.argv[1:] if argv is None else argv
    return write_or_check(
        SCHEMA_PATH,
        render(),
        "python -m spendstream.producers.schema",
        check="--check" in args,
    )


if __name__ == "__main__":
    raise SystemExit(main())
