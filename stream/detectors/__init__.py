"""Detectors: pure, stateful, event-time rules over priced facts (one module per rule)."""

from __future__ import annotations

from spendstream.stream.detectors.base import Detector, make_alert, scope_of, scopes_of

__all__ = ["Detector", "make_alert", "scope_of", "scopes_of"]
