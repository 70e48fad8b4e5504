"""``spendstream query --list``: what each named query answers, whole."""

from __future__ import annotations

import json

import pytest

from spendstream.cli import main
from spendstream.warehouse.queries import QUERIES


def test_the_list_shows_every_description_whole(capsys: pytest.CaptureFixture[str]) -> None:
    # The table cut descriptions past 100 characters ("gross margin, AI cost …"): what a
    # query answers is what --list is read for.
    assert main(["query", "--list"]) == 0
    out = capsys.readouterr().out
    assert "…" not in out
    joined = " ".join(out.split())
    for q in QUERIES:
        assert f"{q.name} {' '.join(q.description.split())}" in joined, q.name
    assert "run one: spendstream query NAME" in out


def test_the_list_for_programs_is_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["query", "--list", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["description"]) for r in rows] == [
        (q.name, q.description) for q in QUERIES
    ]
