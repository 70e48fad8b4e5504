"""Integrations that meter calls made through other libraries, with no per-call code.

- ``spendstream.producers.integrations.litellm``: a LiteLLM callback (SDK or proxy).
- ``spendstream.producers.integrations.clients``: ``instrument(meter, client)`` for OpenAI
  and Anthropic SDK clients (``Meter.instrument``).

Each imports its library only when used: ``spendstream.producers`` stays light.
"""

from __future__ import annotations

__all__: list[str] = []
