"""Where the warehouse keeps things under ``<workdir>/warehouse`` (the embedded default).

    <workdir>/warehouse/
      catalog.db                         pyiceberg's SQL catalog (SQLite), unless catalog_uri
      tables/<namespace>/<table>/        unless [warehouse] location (e.g. s3://bucket/prefix)
        metadata/                        Iceberg metadata: *.metadata.json, manifests
        data/<col>_day=YYYY-MM-DD/*.parquet   data files, one day partition each
        data/_schema/<table>.parquet     zero rows: keeps spendstream.duckdb's glob valid
        spendstream/<writer>/*.record    usage_facts only: each writer's state and outbox
      tables/quarantine/<batch>/         batches that failed the quality pre-check
      current/<table>.parquet            the current snapshot's file list (spendstream.duckdb)
      spendstream.duckdb                 views only (rebuilt by ensure_views, never held open)

Names derived from data pass through ``segment``, which percent-encodes everything outside
a small safe alphabet, so no value (``../``, ``/``, NUL, dots, unicode, 10 kB names) can
name a path outside its directory.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["MAX_SEGMENT_CHARS", "segment"]

MAX_SEGMENT_CHARS = 120

_SAFE = re.compile(r"[A-Za-z0-9_\-]")


def segment(value: str) -> str:
    """A value made safe as one path component (and as a hive partition value).

    Percent-encodes every byte outside ``[A-Za-z0-9_-]`` (so ``.``, ``/``, ``\\``, ``=``,
    NUL and non-ASCII are encoded); over-long results keep a prefix plus a hash so two
    long values stay distinct. Never empty, never ``.`` or ``..``.
    """
    out = []
    for ch in value:
        if _SAFE.fullmatch(ch):
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8", errors="surrogatepass"))
    encoded = "".join(out) or "%00empty"
    if len(encoded) > MAX_SEGMENT_CHARS:
        digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
        encoded = encoded[: MAX_SEGMENT_CHARS - 17] + "~" + digest
    return encoded
