"""A newer genai-prices data file in the workdir: ``spendstream prices update``.

genai-prices ships a snapshot of its price data inside the package (offline, as old as
the installed release). ``update_price_data`` fetches the data file genai-prices
publishes (the JSON array of providers its own ``UpdatePrices`` reads, by default from
``DEFAULT_URL``), checks that genai-prices can load it, and keeps it as
``<workdir>/prices/genai-prices.json`` with ``genai-prices.meta.json`` beside it (the URL,
when it was fetched, the server's Last-Modified date, a SHA-256 and counts).
``load_price_data`` returns it for the pricer, or None, and the pricer then uses the
bundled snapshot. Every pricer built for a workdir (``ingest``, ``run``, ``prices``,
``whatif``) uses the file when it is there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from spendstream.errors import SpendstreamError
from spendstream.workdir import write_atomically

__all__ = [
    "DEFAULT_URL",
    "PriceData",
    "PriceDataError",
    "bundled_price_data",
    "load_price_data",
    "price_data_paths",
    "update_price_data",
]

# Where genai-prices' own UpdatePrices fetches from (genai_prices.update_prices.DEFAULT_UPDATE_URL).
DEFAULT_URL = (
    "https://raw.githubusercontent.com/pydantic/genai-prices/refs/heads/main/"
    "prices/new_data/v2/data.json"
)
_DIR = "prices"
_DATA = "genai-prices.json"
_META = "genai-prices.meta.json"


class PriceDataError(SpendstreamError):
    """A price data file could not be fetched, read or loaded."""


@dataclass(frozen=True, slots=True)
class PriceData:
    """A genai-prices snapshot with where it came from and how new it is."""

    snapshot: Any  # genai_prices.data_snapshot.DataSnapshot
    source: str
    as_of: datetime | None
    fetched_at: datetime | None = None
    providers: int = 0
    models: int = 0


def price_data_paths(workdir: Path) -> tuple[Path, Path]:
    """The data file and its metadata file in ``workdir``."""
    folder = Path(workdir) / _DIR
    return folder / _DATA, folder / _META


def _snapshot(raw: Any) -> Any:
    from genai_prices import data_snapshot
    from genai_prices.types import _providers_from_raw

    if not isinstance(raw, list):
        raise PriceDataError("expected a JSON array of providers (genai-prices' data format)")
    try:
        providers = _providers_from_raw(raw)
    except Exception as exc:  # pydantic's ValidationError and friends, with their message
        raise PriceDataError(f"genai-prices cannot load this data: {exc}") from exc
    if not providers:
        raise PriceDataError("the price data lists no providers")
    return data_snapshot.DataSnapshot(providers, from_auto_update=True)


def _counts(snapshot: Any) -> tuple[int, int]:
    return len(snapshot.providers), sum(len(p.models) for p in snapshot.providers)


def update_price_data(workdir: Path, url: str = DEFAULT_URL, *, timeout_s: float = 30) -> PriceData:
    """Fetch the price data at ``url`` into ``workdir`` (replacing an older file atomically)."""
    import httpx

    try:
        response = httpx.get(url, timeout=timeout_s, follow_redirects=True)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise PriceDataError(f"could not fetch price data from {url}: {exc}") from exc
    body = response.content
    try:
        raw = json.loads(body)
    except ValueError as exc:
        raise PriceDataError(f"{url} did not return JSON: {exc}") from exc
    snapshot = _snapshot(raw)
    fetched_at = datetime.now(UTC)
    as_of = fetched_at
    modified = response.headers.get("last-modified")
    if modified:
        with contextlib.suppress(TypeError, ValueError):
            as_of = parsedate_to_datetime(modified).astimezone(UTC)
    providers, models = _counts(snapshot)
    meta = {
        "url": url,
        "fetched_at": fetched_at.isoformat(),
        "as_of": as_of.isoformat(),
        "sha256": hashlib.sha256(body).hexdigest(),
        "providers": providers,
        "models": models,
    }
    data_path, meta_path = price_data_paths(workdir)
    data_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(data_path, body)
    write_atomically(meta_path, json.dumps(meta, indent=2).encode())
    return PriceData(
        snapshot, f"{url} (fetched {fetched_at:%Y-%m-%d})", as_of, fetched_at, providers, models
    )


def load_price_data(workdir: Path | None) -> PriceData | None:
    """The fetched price data of ``workdir``, or None when there is none (use the bundled)."""
    if workdir is None:
        return None
    data_path, meta_path = price_data_paths(workdir)
    if not data_path.exists():
        return None
    try:
        raw = json.loads(data_path.read_bytes())
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    except (OSError, ValueError) as exc:
        raise PriceDataError(
            f"cannot read {data_path}: {exc}; run `spendstream prices update` again or delete it"
        ) from exc
    snapshot = _snapshot(raw)
    fetched_at = _instant(meta.get("fetched_at"))
    as_of = _instant(meta.get("as_of")) or fetched_at
    providers, models = _counts(snapshot)
    label = (
        f"{meta.get('url', data_path)} (fetched {fetched_at:%Y-%m-%d})"
        if fetched_at
        else str(data_path)
    )
    return PriceData(snapshot, label, as_of, fetched_at, providers, models)


def bundled_price_data() -> PriceData:
    """The snapshot inside the installed genai-prices. Its date is not recorded in the
    package (``as_of`` None); ``prices show`` gives the newest dated price change in it."""
    from genai_prices import data_snapshot

    snapshot = data_snapshot._bundled_snapshot()
    providers, models = _counts(snapshot)
    return PriceData(
        snapshot,
        f"genai-prices {version('genai-prices')} bundled snapshot",
        None,
        None,
        providers,
        models,
    )


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
