"""Alert routing: alert events reach the people on call."""

from __future__ import annotations

__all__: list[str] = []
