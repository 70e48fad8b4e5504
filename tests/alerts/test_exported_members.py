"""The package's public names are exactly what __all__ says, and each exists (httpx's habit)."""

from __future__ import annotations

import spendstream.alerts as alerts


def test_every_exported_name_exists_and_public_members_are_exported() -> None:
    assert all(hasattr(alerts, name) for name in alerts.__all__)
    public = {
        n
        for n, v in vars(alerts).items()
        if not n.startswith("_") and getattr(v, "__module__", "").startswith("spendstream.alerts.")
    }
    assert public == set(alerts.__all__)
