"""OTLP/JSON trace files for ``spendstream ingest --format otlp``: GenAI spans -> event records.

Reads what the OpenTelemetry Collector's ``file`` exporter writes (one OTLP/JSON
``ExportTraceServiceRequest`` per line; ``-`` is stdin) and files holding one request as a
single JSON document, pretty-printed or not. A gzip-compressed file is read as such. Each
GenAI span becomes a record for the embedded pipeline (``producers/otel.py`` decides which
and how); a rejected span, or a line that is not an OTLP/JSON export, becomes a dead letter
naming ``<file>:<line>``; spans that are not GenAI calls are counted in ``ignored``.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterable, Iterator
from typing import IO, BinaryIO, cast

from spendstream.producers import wire_json
from spendstream.producers.otel import DecodedTraces, OtelMapping, OtlpDecodeError, traces_from_json
from spendstream.runtime.embedded import InputRecord, Rejected, own_stdin

__all__ = ["OtlpFiles"]

_GZIP_MAGIC = b"\x1f\x8b"


class OtlpFiles:
    """Iterate the records of OTLP/JSON files; ``spans`` and ``ignored`` count as it goes."""

    def __init__(
        self, paths: Iterable[str], mapping: OtelMapping, stdin: IO[bytes] | None = None
    ) -> None:
        self.paths = list(paths)
        self.mapping = mapping
        self.stdin = stdin
        self.spans = 0
        self.ignored = 0

    def __iter__(self) -> Iterator[InputRecord]:
        for path in self.paths:
            if path == "-":
                # As a file: an export per line (streamed as it comes), or one document,
                # pretty-printed (`cat export.json |`), told apart by its first line.
                yield from self._file("stdin", cast(BinaryIO, self.stdin or own_stdin()))
                continue
            with open(path, "rb") as raw:
                compressed = raw.read(2) == _GZIP_MAGIC
            opened = gzip.open(path, "rb") if compressed else open(path, "rb")  # noqa: SIM115
            with opened as fh:  # both read bytes
                try:
                    yield from self._file(path, cast(BinaryIO, fh))
                except (EOFError, OSError, zlib.error) as exc:
                    if not compressed:
                        raise
                    # A file still being written, or damaged: what was read before lands,
                    # and the rest is named (it stopped the whole run before).
                    yield Rejected(
                        path,
                        b"",
                        f"the gzip file is truncated or damaged ({exc}); the exports before "
                        "that point were read, the rest of the file was not",
                    )

    def _file(self, path: str, fh: BinaryIO) -> Iterator[InputRecord]:
        first, skipped = b"", 0
        for first in fh:
            if first.strip():
                break
            skipped += 1
        if not first.strip():
            return
        try:
            one_per_line = isinstance(wire_json.loads(first), dict)
        except ValueError:
            one_per_line = False
        if one_per_line:
            yield from self._lines(path, _chain(first, fh), start=1 + skipped)
            return
        # One export spread over many lines (pretty-printed): the whole file is the document.
        text = first + fh.read()
        try:
            request = wire_json.loads(text)
        except ValueError as exc:
            yield self._dead(
                path,
                1 + skipped,  # where the document starts, as a parsed one is named
                text,
                f"not OTLP/JSON (neither one export per line nor one document): {exc}",
            )
            return
        yield from self._request(path, 1 + skipped, text, request)

    def _lines(self, path: str, lines: Iterable[bytes], start: int = 1) -> Iterator[InputRecord]:
        for n, line in enumerate(lines, start=start):
            if not line.strip():
                continue
            try:
                request = wire_json.loads(line)
            except ValueError as exc:
                yield self._dead(path, n, line, f"line is not JSON: {exc}")
                continue
            yield from self._request(path, n, line, request)

    def _request(self, path: str, n: int, raw: bytes, request: object) -> Iterator[InputRecord]:
        if (
            isinstance(request, dict)
            and request
            and not {"resourceSpans", "resource_spans"} & request.keys()
        ):
            # An empty export ({}) holds nothing; an object with other keys is not an export,
            # and a file line must end somewhere: here, a dead letter that says what it is.
            usage = {"provider", "model", "input_tokens"} <= request.keys()
            yield self._dead(
                path,
                n,
                raw,
                "not an OTLP/JSON traces export: "
                + (
                    "a usage event (ingest it without --format otlp)"
                    if usage
                    else "no resourceSpans"
                ),
            )
            return
        try:
            decoded = traces_from_json(request, self.mapping)
        except OtlpDecodeError as exc:
            yield self._dead(path, n, raw, str(exc))
            return
        yield from self._records(path, n, decoded)

    def _records(self, path: str, n: int, decoded: DecodedTraces) -> Iterator[InputRecord]:
        self.spans += decoded.spans
        self.ignored += decoded.ignored
        source = f"{path}:{n}"
        for e in decoded.events:
            yield source, e.__pydantic_serializer__.to_json(e, exclude_none=True)
        for r in decoded.rejected:
            yield Rejected(source, r.raw.encode(), r.error)

    @staticmethod
    def _dead(path: str, n: int, raw: bytes, error: str) -> Rejected:
        return Rejected(f"{path}:{n}", raw, error)


def _chain(first: bytes, rest: Iterable[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest
