"""The revenue table: exact decimals from CSV, merged by (month, plan, user), errors that name the line."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from spendstream.errors import ConfigError
from spendstream.warehouse import Warehouse
from spendstream.warehouse.revenue import load_revenue, parse_revenue_csv
from tests.warehouse.conftest import Query


def test_loading_merges_by_month_plan_and_user(wh: Warehouse, q: Query, tmp_path: Path) -> None:
    first = tmp_path / "a.csv"
    first.write_text("month,plan,revenue_usd\n2026-03,pro,1000.10\n2026-03,,5000\n")
    second = tmp_path / "b.csv"
    second.write_text("month,user_id,revenue_usd\n2026-03-15,u1,0.000000001\n")
    again = tmp_path / "c.csv"
    again.write_text("month,plan,revenue_usd\n2026-03,pro,1200\n")
    assert [load_revenue(wh, p) for p in (first, second, again)] == [2, 1, 1]
    assert q("SELECT month, plan, user_id, revenue_usd FROM revenue ORDER BY ALL") == [
        (date(2026, 3, 1), "pro", None, Decimal("1200")),
        (date(2026, 3, 1), None, "u1", Decimal("0.000000001")),
        (date(2026, 3, 1), None, None, Decimal("5000")),
    ]


def test_the_largest_amount_the_warehouse_holds_loads_exactly(
    wh: Warehouse, q: Query, tmp_path: Path
) -> None:
    largest = "99999999999999999999.999999999999999999"
    path = tmp_path / "r.csv"
    path.write_text(f"month,revenue_usd\n2026-03,{largest}\n")
    assert load_revenue(wh, path) == 1
    assert q("SELECT revenue_usd FROM revenue") == [(Decimal(largest),)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("plan,revenue_usd\npro,1\n", "missing column(s) month"),
        ("month,revenue_usd,color\n2026-03,1,red\n", "unknown column(s) color"),
        ("month,revenue_usd\n03/2026,1\n", ":2: month '03/2026' is not YYYY-MM"),
        ("month,revenue_usd\n2026-03,ten\n", ":2: revenue_usd 'ten' is not a decimal"),
        ("month,revenue_usd\n2026-03,1\n2026-04,-5\n", ":3: revenue_usd must be a non-negative"),
        # It stopped the load with pyarrow's traceback (decimal128(38, 18) cannot hold it).
        ("month,revenue_usd\n2026-03,1e20\n", ":2: revenue_usd 1E+20 is not below 1e20"),
        ("month,plan,user_id,revenue_usd\n2026-03,pro,u1,1\n", "plan or user_id, not both"),
    ],
)
def test_bad_revenue_csv_names_the_line_and_column(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "r.csv"
    path.write_text(content)
    with pytest.raises(ConfigError) as exc:
        parse_revenue_csv(path)
    assert message in str(exc.value)
