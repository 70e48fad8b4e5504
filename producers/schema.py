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
_DRAFT = "https://json-schema.org/draft/2020-12/schema"


def json_schema() -> dict[str, Any]:
    """The schema a producer must satisfy (validation mode: what the pipeline accepts)."""
    schema = UsageEvent.model_json_schema(mode="validation")
    schema["$schema"] = _DRAFT
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
