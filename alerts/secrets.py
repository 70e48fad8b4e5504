"""Sink secrets: the project's one secret loader (``spendstream.secrets``), re-exported."""

from __future__ import annotations

from spendstream.secrets import SecretStr, load_secret

__all__ = ["SecretStr", "load_secret"]
