"""``spendstream warehouse migrate``: a workdir of the old layout becomes Iceberg tables."""

from __future__ import annotations

import tarfile
from decimal import Decimal
from pathlib import Path

import pytest

from spendstream.cli import main
from spendstream.warehouse import Warehouse
from spendstream.warehouse.reading import run_sql

LEGACY = Path(__file__).parent / "data" / "legacy-workdir.tar.gz"


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    """A workdir written by the last pre-Iceberg release (data/make_legacy_workdir.py):
    facts over three days, one day compacted (a k-file replacing its c-files), alerts,
    breaker events, a dead letter, revenue, and two writers' states and positions."""
    with tarfile.open(LEGACY) as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path


def test_migrate_copies_every_table_and_every_writers_state(
    legacy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["warehouse", "migrate", "--workdir", str(legacy)]) == 0
    assert "migrated 8 usage_facts, 1 alerts, 1 breaker_events, 1 dead_letters" in (
        capsys.readouterr().out
    )
    q = lambda sql: run_sql(legacy, sql)[1]  # noqa: E731
    assert q("SELECT team, count(*), sum(cost_usd) FROM usage_facts GROUP BY 1 ORDER BY 1") == [
        ("ads", 1, None),
        ("search", 6, Decimal("0.06")),
        (None, 1, Decimal("0.01")),
    ]
    assert q("SELECT count(*), count(DISTINCT event_id) FROM usage_facts") == [(8, 8)]
    # Columns the old release did not write: token kinds it did not know were 0, and a
    # priced fact had no tool cost (0); an unpriced one keeps null costs.
    assert q(
        "SELECT priced, tool_cost_usd, max(cache_write_1h_tokens), max(output_audio_tokens), "
        "count(tool_requests) FROM usage_facts GROUP BY ALL ORDER BY 1"
    ) == [(False, None, 0, 0, 0), (True, Decimal(0), 0, 0, 0)]
    assert q("SELECT count(*) FROM alerts") == q("SELECT count(*) FROM breaker_events") == [(1,)]
    assert q("SELECT count(*) FROM dead_letters") == q("SELECT count(*) FROM revenue") == [(1,)]
    with Warehouse(legacy) as wh:
        writers = wh.writers()
    assert writers["embedded"].positions == {"spendstream.usage/0": 42}
    assert writers["embedded"].state == b'{"engine":2}'
    assert writers["usage/1"].positions == {"spendstream.usage/1": 7}
    old = [p.name for p in (legacy / "warehouse").iterdir()]
    assert "catalog.sqlite" not in old and any(n.startswith("legacy-") for n in old)


def test_migrate_twice_is_harmless(legacy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["warehouse", "migrate", "--workdir", str(legacy)]) == 0
    assert main(["warehouse", "migrate", "--workdir", str(legacy)]) == 0
    assert "nothing to migrate" in capsys.readouterr().out
    assert run_sql(legacy, "SELECT count(*) FROM usage_facts")[1] == [(8,)]
