"""Committed files generated from code (the event's JSON Schema, docs/configuration.md).

``write_or_check(path, text, command, check)`` writes the file, or with ``check`` exits 1
when the committed one differs, naming the command that regenerates it (tests and CI call
the check so a stale file cannot be merged).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["write_or_check"]


def write_or_check(path: Path, text: str, command: str, *, check: bool) -> int:
    """0 when written or current; 1 (after saying so) when ``check`` finds it stale."""
    if check:
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            print(f"{path} is out of date: run {command}")
            return 1
        return 0
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
    return 0
