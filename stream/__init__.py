"""Stream processing: an event becomes a priced fact, alerts and breaker changes."""

from __future__ import annotations

__all__: list[str] = []
