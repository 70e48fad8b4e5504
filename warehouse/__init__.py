"""The warehouse: priced facts in Parquet, DuckDB views over them."""

from __future__ import annotations

__all__: list[str] = []
