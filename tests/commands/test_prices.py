"""``spendstream prices``: unpriced models, reconciliation, repricing, rate lookup (real warehouse)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from spendstream.cli import main
from spendstream.config import config_from_dict
from spendstream.pricebook import reprice_range
from spendstream.warehouse.reading import load_facts


def _event(i: int, **kw: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "event_id": f"p{i}",
        "ts": "2025-11-03T12:00:00Z",
        "provider": "anthropic",
        "model": "claude-sonnet-4-5",
        "input_tokens": 5800,
        "cache_read_tokens": 5000,
        "output_tokens": 600,
    }
    data.update(kw)
    return data


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    events = [
        _event(1, reported_cost_usd="0.0129"),
        _event(2, reported_cost_usd="0.0130"),
        _event(
            3,
            provider="self-hosted",
            model="llama-3-70b",
            input_tokens=1_000_000,
            cache_read_tokens=0,
        ),
        _event(4, provider="self-hosted", model="llama-3-70b", ts="2025-11-04T01:00:00Z"),
        _event(
            5,
            provider="openai",
            model="o3",
            ts="2025-05-01T00:00:00Z",
            input_tokens=1_000_000,
            cache_read_tokens=0,
            output_tokens=0,
        ),
    ]
    src = tmp_path / "events.jsonl"
    src.write_text("".join(json.dumps(e) + "\n" for e in events))
    wd = tmp_path / "wd"
    assert main(["ingest", str(src), "--workdir", str(wd)]) == 0
    return wd


def test_unpriced_lists_models_landed_without_a_price(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["prices", "unpriced", "--workdir", str(workdir), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["provider"], r["model"], r["calls"]) for r in rows] == [
        ("self-hosted", "llama-3-70b", 2)
    ]
    assert "provider 'self-hosted' is not in genai-prices" in rows[0]["reason"]


def test_unpriced_names_the_priced_model_or_provider_a_typo_most_likely_meant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A producer sending `gpt5-mini` (or provider `opnai`) sees its calls unpriced; the fix
    # is the name in the producer, which `prices show` suggested and `unpriced` did not.
    events = [
        _event(1, provider="openai", model="gpt5-mini"),
        _event(2, provider="opnai", model="gpt-5-mini"),
        _event(3, provider="acme", model="zzz-9"),
    ]
    src = tmp_path / "events.jsonl"
    src.write_text("".join(json.dumps(e) + "\n" for e in events))
    wd = tmp_path / "wd"
    assert main(["ingest", str(src), "--workdir", str(wd)]) == 0
    capsys.readouterr()
    assert main(["prices", "unpriced", "--workdir", str(wd), "--format", "json"]) == 0
    reasons = {
        (r["provider"], r["model"]): r["reason"] for r in json.loads(capsys.readouterr().out)
    }
    assert reasons[("openai", "gpt5-mini")].endswith("; did you mean gpt-5-mini?")
    assert reasons[("opnai", "gpt-5-mini")].endswith("; did you mean provider openai?")
    assert "did you mean" not in reasons[("acme", "zzz-9")]


def test_a_model_given_under_another_provider_names_the_provider_that_prices_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `prices show openai claude-sonnet-4-5` (or a proxy's events so named) said only
    # "genai-prices knows no openai model matching 'claude-sonnet-4-5'".
    assert main(["prices", "show", "openai", "claude-sonnet-4-5", "--workdir", str(tmp_path)]) == 2
    assert (
        "genai-prices knows no openai model matching 'claude-sonnet-4-5'; claude-sonnet-4-5 is "
        "anthropic's: did you mean anthropic/claude-sonnet-4-5?"
    ) in capsys.readouterr().err
    src = tmp_path / "events.jsonl"
    src.write_text(json.dumps(_event(1, provider="openai")) + "\n")
    assert main(["ingest", str(src), "--workdir", str(tmp_path / "wd")]) == 0
    capsys.readouterr()
    assert main(["prices", "unpriced", "--workdir", str(tmp_path / "wd"), "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["reason"].endswith("did you mean anthropic/claude-sonnet-4-5?"), row


def test_reconcile_shows_our_cost_against_reported_by_model(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["prices", "reconcile", "--workdir", str(workdir), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1
    row = rows[0]
    assert (row["provider"], row["model"], row["calls"]) == ("anthropic", "claude-sonnet-4-5", 2)
    assert float(row["our_cost_usd"]) == pytest.approx(0.0258)
    assert row["difference_usd"].rstrip("0") == "-0.0001"


def test_reprice_shows_old_and_new_totals_and_writes_nothing_without_yes(
    workdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "prices.toml"
    cfg.write_text(
        '[[prices.model]]\nprovider = "self-hosted"\nmodel = "llama-3-70b"\n'
        "input_per_mtok = 0.5\noutput_per_mtok = 1.0\n"
    )
    capsys.readouterr()
    rc = main(
        [
            "prices",
            "reprice",
            "--workdir",
            str(workdir),
            "--config",
            str(cfg),
            "--since",
            "2025-11-01",
            "--until",
            "2025-12-01",
            "--format",
            "json",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0
    lines = {(r["provider"], r["model"]): r for r in json.loads(captured.out)}
    llama = lines[("self-hosted", "llama-3-70b")]
    assert (llama["calls"], llama["changed"], llama["old_unpriced"], llama["new_unpriced"]) == (
        2,
        2,
        2,
        0,
    )
    # (1,000,000 + 5,800) input at $0.5, cache reads at the input rate; 2 x 600 output at $1.
    assert llama["new_cost_usd"].rstrip("0") == "0.5041"
    assert lines[("anthropic", "claude-sonnet-4-5")]["changed"] == 0
    assert ("openai", "o3") not in lines  # outside the range
    assert "2 of 4 facts would change" in captured.err
    # Exact, without 18 places of trailing zeros (a zero sum printed as "$0E-18").
    total = next(line for line in captured.err.splitlines() if line.startswith("total: "))
    old_usd = sum(Decimal(r["old_cost_usd"]) for r in lines.values())
    new_usd = sum(Decimal(r["new_cost_usd"]) for r in lines.values())
    assert total.startswith(
        f"total: old ${old_usd.normalize():f} new ${new_usd.normalize():f} "
        f"difference ${(new_usd - old_usd).normalize():f};"
    )
    assert "E-" not in total and "000000;" not in total
    capsys.readouterr()
    same = ["prices", "reprice", "--workdir", str(workdir), "--since", "2025-11-01"]
    assert main([*same, "--until", "2025-12-01", "--format", "json"]) == 0
    assert "difference $0; 0 of 4 facts would change" in capsys.readouterr().err
    assert "--yes" in captured.err
    capsys.readouterr()
    assert main(["prices", "unpriced", "--workdir", str(workdir), "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1  # still unpriced: nothing written


def test_reprice_keeps_time_effective_prices_unless_asked(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "prices",
        "reprice",
        "--workdir",
        str(workdir),
        "--since",
        "2025-01-01",
        "--until",
        "2025-06-01",
        "--format",
        "json",
    ]
    capsys.readouterr()
    assert main(args) == 0
    (same,) = json.loads(capsys.readouterr().out)
    assert (same["model"], same["changed"]) == ("o3", 0)
    assert main([*args, "--at-current-prices"]) == 0
    (now,) = json.loads(capsys.readouterr().out)
    assert now["changed"] == 1
    assert now["old_cost_usd"].rstrip("0").rstrip(".") == "10"
    assert now["new_cost_usd"].rstrip("0").rstrip(".") == "2"


def test_bad_time_range_is_a_usage_error_naming_the_flag(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "prices",
                "reprice",
                "--workdir",
                str(workdir),
                "--since",
                "yesterday",
                "--until",
                "2025-06-01",
            ]
        )
        == 2
    )
    assert "--since" in capsys.readouterr().err
    assert (
        main(
            [
                "prices",
                "reprice",
                "--workdir",
                str(workdir),
                "--since",
                "2025-06-01",
                "--until",
                "2025-01-01",
            ]
        )
        == 2
    )


def test_show_prints_the_rates_in_force_and_their_source(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["prices", "show", "openai", "o3", "--at", "2025-07-01", "--format", "json"]) == 0
    captured = capsys.readouterr()
    rows = {r["dimension"]: r for r in json.loads(captured.out)}
    assert rows["input_tokens"]["rate_usd"] == "2"
    assert rows["input_tokens"]["batch_rate_usd"] == "1"  # no catalog batch price: 50% off
    assert "genai-prices:openai/o3@2025-06-10" in captured.err
    assert "genai-prices:openai/o3@2025-06-10+batch:50%" in captured.err
    assert "price data: genai-prices 0.2.3 bundled snapshot" in captured.err
    assert main(["prices", "show", "self-hosted", "nothing"]) == 2
    # Past the year 9999 once in UTC: it was an OverflowError's traceback.
    assert main(["prices", "show", "openai", "o3", "--at", "9999-12-31T23:59:59-12:00"]) == 2
    assert "--at '9999-12-31T23:59:59-12:00' is past the year 9999 in UTC" in (
        capsys.readouterr().err
    )


def test_reprice_yes_writes_the_new_costs_through_the_warehouse(
    workdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "prices.toml"
    cfg.write_text(
        '[[prices.model]]\nprovider = "self-hosted"\nmodel = "llama-3-70b"\n'
        "input_per_mtok = 0.5\noutput_per_mtok = 1.0\n"
    )
    args = ["--workdir", str(workdir), "--since", "2025-11-01", "--until", "2025-12-01"]
    capsys.readouterr()
    assert main(["prices", "reprice", *args, "--config", str(cfg), "--yes"]) == 0
    assert "wrote new costs for 2 facts" in capsys.readouterr().err


def test_written_costs_replace_the_stored_facts(workdir: Path) -> None:
    config = config_from_dict(
        {
            "prices": {
                "model": [
                    {
                        "provider": "self-hosted",
                        "model": "llama-3-70b",
                        "input_per_mtok": 0.5,
                        "output_per_mtok": 1.0,
                    }
                ]
            }
        }
    )
    since, until = datetime(2025, 11, 1, tzinfo=UTC), datetime(2025, 12, 1, tzinfo=UTC)
    old = load_facts(workdir, since, until)
    done = reprice_range(workdir, config, since, until, write=True)
    assert done.written == 2
    now = {f.event.event_id: f for f in load_facts(workdir, since, until)}
    assert len(now) == 4
    assert now["p3"].cost is not None and now["p4"].cost is not None
    assert now["p3"].cost.price_source == "override:self-hosted/llama-3-70b"
    assert now["p3"].cost.cost_usd + now["p4"].cost.cost_usd == Decimal("0.5041")
    assert now["p1"].cost == old[0].cost  # untouched facts keep their cost


def test_reprice_of_a_month_after_adding_a_dated_row_changes_only_facts_from_its_date(
    workdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    row = '[[prices.model]]\nprovider = "self-hosted"\nmodel = "llama-3-70b"\noutput_per_mtok = 1\n'
    month = ["--workdir", str(workdir), "--since", "2025-11-01", "--until", "2025-12-01"]
    before = tmp_path / "before.toml"
    before.write_text(row + "input_per_mtok = 0.5\n")
    assert main(["prices", "reprice", *month, "--config", str(before), "--yes"]) == 0
    # The provider's price went up at 2025-11-04T00:00Z; the llama facts landed on
    # 2025-11-03 12:00 and 2025-11-04 01:00.
    after = tmp_path / "after.toml"
    after.write_text(
        row + "input_per_mtok = 0.5\n" + row + "input_per_mtok = 1\neffective_from = 2025-11-04\n"
    )
    capsys.readouterr()
    args = ["prices", "reprice", *month, "--config", str(after)]
    assert main([*args, "--format", "json"]) == 0
    captured = capsys.readouterr()
    lines = {(r["provider"], r["model"]): r for r in json.loads(captured.out)}
    llama = lines[("self-hosted", "llama-3-70b")]
    assert (llama["calls"], llama["changed"]) == (2, 1)
    assert "1 of 4 facts would change" in captured.err
    assert main([*args, "--yes"]) == 0
    facts = {
        f.event.event_id: f.cost
        for f in load_facts(
            workdir, datetime(2025, 11, 1, tzinfo=UTC), datetime(2025, 12, 1, tzinfo=UTC)
        )
    }
    p3, p4 = facts["p3"], facts["p4"]
    assert p3 is not None and p4 is not None
    assert p3.price_source == "override:self-hosted/llama-3-70b"
    assert p4.price_source == "override:self-hosted/llama-3-70b@2025-11-04"
    # p4: 5,800 input at $1 (cache reads at the input rate) and 600 output at $1.
    assert p4.cost_usd == Decimal("0.0064")


def test_show_at_an_instant_shows_the_dated_row_in_force_then(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "dated.toml"
    row = '[[prices.model]]\nprovider = "acme"\nmodel = "m1"\noutput_per_mtok = 1\n'
    cfg.write_text(
        row
        + "input_per_mtok = 3\neffective_until = 2026-03-01T08:00:00Z\n"
        + row
        + "input_per_mtok = 2\neffective_from = 2026-03-01T00:00:00-08:00\n"
    )
    show = ["prices", "show", "acme", "m1", "--config", str(cfg), "--format", "json", "--at"]
    capsys.readouterr()
    assert main([*show, "2026-03-01T07:59:59.999999Z"]) == 0
    before = capsys.readouterr()
    rows = {r["dimension"]: r for r in json.loads(before.out)}
    assert rows["input_tokens"]["rate_usd"] == "3"
    assert "price_source: override:acme/m1@..2026-03-01T08:00:00Z (at" in before.err
    assert main([*show, "2026-03-01T08:00:00Z"]) == 0
    at = capsys.readouterr()
    assert {r["dimension"]: r for r in json.loads(at.out)}["input_tokens"]["rate_usd"] == "2"
    assert "price_source: override:acme/m1@2026-03-01T08:00:00Z (at" in at.err


def test_show_for_a_service_tier_nothing_prices_says_the_rates_are_the_standard_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `--service-tier flx` (flex mistyped) showed the standard rates with nothing to tell
    # them from flex's.
    where = ["--workdir", str(tmp_path)]
    assert main(["prices", "show", "openai", "gpt-5-mini", "--service-tier", "flx", *where]) == 0
    assert (
        "note: no openai/gpt-5-mini price is specific to service tier 'flx' (a typo?): the "
        "rates above are the standard ones, which a call with that tier is priced at\n"
    ) in capsys.readouterr().err
    assert main(["prices", "show", "openai", "gpt-5-mini", "--service-tier", "flex", *where]) == 0
    assert "note:" not in capsys.readouterr().err
