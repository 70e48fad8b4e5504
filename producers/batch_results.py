"""Provider batch result files (JSON Lines) as usage events: ``spendstream import-batch``.

Each line of an OpenAI Batch API output file (``{"id", "custom_id", "response": {"body"}}``)
or an Anthropic Message Batches results file (``{"custom_id", "result": {"message"}}``)
becomes one usage event with ``batch = true``. Its ``event_id`` is derived from the line's
own unique id (OpenAI's ``batch_req_...`` line id, Anthropic's ``msg_...`` message id,
else the custom_id), so importing a file twice lands nothing new. ``request_id`` is the
line's ``custom_id``. ``ts`` is the response's own creation time where it has one
(OpenAI), else ``default_ts`` (the command passes ``--at``, else the file's modification
time: Anthropic results carry no time).

A line that is not JSON, failed at the provider (``result.type`` "errored", a non-200
``status_code``) or breaks the event's invariants is returned with its reason instead of
an event, to become a dead letter.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from spendstream.producers import wire_json
from spendstream.producers.event import UsageEvent, describe_validation_error
from spendstream.producers.providers import batch_result_usage
from spendstream.records import stable_id

__all__ = ["BatchLine", "read_batch_results"]


@dataclass(frozen=True, slots=True)
class BatchLine:
    """One line of a batch results file: its event (as JSON) or why it has none."""

    line: int
    raw: bytes
    event: bytes | None
    error: str | None


def read_batch_results(
    path: str | Path,
    *,
    provider: str | None = None,
    default_ts: datetime | None = None,
    attribution: Mapping[str, Any] | None = None,
) -> Iterator[BatchLine]:
    """Every non-blank line of a batch results file, judged on its own, in order.
    ``attribution``: event fields every line's event gets (team, feature, tags...): a
    result line names none, only the batch's submitter knows them."""
    path = Path(path)
    if default_ts is None:
        default_ts = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            raw = raw.rstrip(b"\r\n")
            if not raw.strip():
                continue
            try:
                event, error = _event(raw, provider, default_ts, attribution or {})
            except (TypeError, AttributeError, KeyError, ArithmeticError) as exc:
                # A field of an unexpected shape deep in a provider's response (an "output"
                # that is a number): this line is refused, the file goes on.
                event, error = (
                    None,
                    (
                        f"not a batch result line this reader understands: "
                        f"{type(exc).__name__}: {exc}"
                    ),
                )
            yield BatchLine(number, raw, event, error)


def _event(
    raw: bytes, provider: str | None, default_ts: datetime, attribution: Mapping[str, Any]
) -> tuple[bytes | None, str | None]:
    try:
        data = wire_json.loads(raw)
    except ValueError as exc:
        return None, f"not a JSON batch result line: {exc}"
    if not isinstance(data, dict):
        return None, "not a batch result line: expected a JSON object"
    if "custom_id" not in data and {"provider", "model", "input_tokens"} <= data.keys():
        return None, "not a batch result line: a usage event (ingest it with spendstream ingest)"
    try:
        fields = batch_result_usage(data, provider=provider)
    except ValueError as exc:
        return None, str(exc)
    tags = {**(fields.get("tags") or {}), **attribution.get("tags", {})}
    fields.update(attribution)
    if tags:
        fields["tags"] = tags
    custom_id = fields.pop("custom_id")
    kind = fields["provider"]
    fields["event_id"] = "batch-" + stable_id(kind, _line_id(data, custom_id))
    fields["request_id"] = custom_id[:128]
    try:
        fields.setdefault("ts", _created(data) or default_ts)
    except ValueError as exc:
        return None, str(exc)
    try:
        event = UsageEvent.model_validate(fields)
    except ValidationError as exc:
        return None, describe_validation_error(exc)
    return event.model_dump_json(exclude_none=True).encode(), None


def _line_id(data: dict[str, Any], custom_id: str) -> str:
    if isinstance(data.get("id"), str):  # OpenAI: batch_req_..., unique across batches
        return str(data["id"])
    message = _object(_object(data.get("result")).get("message"))
    if isinstance(message.get("id"), str):  # Anthropic: msg_..., unique across batches
        return str(message["id"])
    return custom_id


def _object(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one (a field of another shape)."""
    return value if isinstance(value, dict) else {}


def _created(data: dict[str, Any]) -> datetime | None:
    body = _object(_object(data.get("response")).get("body"))
    stamp = body.get("created") or body.get("created_at")
    if isinstance(stamp, int | float) and not isinstance(stamp, bool):
        try:
            return datetime.fromtimestamp(stamp, UTC)
        except (OverflowError, ValueError, OSError):  # NaN, or past what a datetime holds
            raise ValueError(f"response.body.created {stamp!r} is not a time") from None
    return None
