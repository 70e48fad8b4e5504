"""whatif on a real warehouse whose answers are known by hand (warehouse/whatif.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from spendstream.cli import main
from spendstream.config import PricesConfig, config_from_dict
from spendstream.producers.event import UsageEvent
from spendstream.records import Fact
from spendstream.stream.pricing import Pricer
from spendstream.warehouse import Warehouse
from spendstream.warehouse.whatif import (
    HOURS_PER_MONTH,
    BatchShare,
    CacheTarget,
    Call,
    OutputCap,
    Route,
    Selector,
    SelfHosting,
    WhatIf,
    run_whatif,
    self_hosting,
)

# A $3/$15 model, a $1/$5 one (a third of each rate), cache reads at a tenth of input.
PRICES_TOML = """
[[prices.model]]
provider = "acme"
model = "big"
input_per_mtok = 3.00
output_per_mtok = 15.00
cache_read_per_mtok = 0.30
batch_discount = 0.5

[[prices.model]]
provider = "acme"
model = "small"
input_per_mtok = 1.00
output_per_mtok = 5.00
cache_read_per_mtok = 0.10
batch_discount = 0.5
"""
T0 = datetime(2026, 3, 2, tzinfo=UTC)
SINCE, UNTIL = T0, T0 + timedelta(days=1)


def _prices() -> PricesConfig:
    import tomllib

    return config_from_dict(tomllib.loads(PRICES_TOML), "test").prices


def _event(n: int, feature: str, **fields: Any) -> UsageEvent:
    data: dict[str, Any] = {
        "event_id": f"{feature}-{n}",
        "ts": T0 + timedelta(minutes=n),
        "provider": "acme",
        "model": "big",
        "input_tokens": 1000 + 7 * n,
        "output_tokens": 400 + 3 * n,
        "team": "t",
        "feature": feature,
    }
    data.update(fields)
    return UsageEvent.model_validate(data)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """40 chat calls and 20 search calls on acme/big, plus 5 on a model nothing prices."""
    pricer = Pricer.from_config(_prices())
    events = [_event(n, "chat") for n in range(40)]
    events += [_event(n, "search", output_tokens=50) for n in range(20)]
    events += [_event(n, "lab", provider="self-hosted", model="llama-ft") for n in range(5)]
    facts = [Fact(e, c, e.ts) for e, c in zip(events, pricer.price_batch(events), strict=True)]
    work = tmp_path / "work"
    with Warehouse(work) as wh:
        wh.commit(facts=facts)
        wh.ensure_views()
    return work


def _run(workdir: Path, *levers: Any, hosting: SelfHosting | None = None) -> Any:
    return run_whatif(workdir, SINCE, UNTIL, Pricer.from_config(_prices()), levers, hosting)


def _line(result: Any, feature: str) -> Any:
    return next(ln for ln in result.lines if ln.feature == feature)


def test_a_team_selector_routes_that_team_s_calls_only(workdir: Path) -> None:
    # `team:NAME` is the first selector people try (it was refused: not a selector).
    team = Selector.parse("team:t", "--route")
    assert (team, team.describe()) == (Selector("team", team="t"), "team t")
    routed = _run(workdir, Route(team, "acme", "small"))
    for feature in ("chat", "search"):
        line = _line(routed, feature)
        assert line.combined_usd * 3 == line.baseline_usd
    untouched = _run(workdir, Route(Selector.parse("team:other", "--route"), "acme", "small"))
    assert untouched.total.savings_usd == 0


def test_routing_a_3_15_feature_to_a_1_5_model_saves_exactly_two_thirds(workdir: Path) -> None:
    result = _run(workdir, Route(Selector("feature", feature="chat"), "acme", "small"))
    chat, search = _line(result, "chat"), _line(result, "search")
    assert chat.baseline_usd > 0
    assert chat.combined_usd * 3 == chat.baseline_usd
    assert chat.savings_usd * 3 == chat.baseline_usd * 2
    assert search.combined_usd == search.baseline_usd  # not selected: untouched
    assert result.total.savings_usd == chat.savings_usd


def test_baseline_is_the_landed_cost_when_prices_are_unchanged(workdir: Path, q_sum: Any) -> None:
    result = _run(workdir, OutputCap(Selector(), 10**9))
    assert result.total.baseline_usd == result.total.stored_usd == q_sum(workdir)
    assert result.total.savings_usd == 0
    lab = _line(result, "lab")
    assert (lab.calls, lab.unpriced_calls, lab.baseline_usd) == (5, 5, 0)


def test_half_the_traffic_to_a_half_price_batch_api_saves_a_quarter(workdir: Path) -> None:
    result = _run(workdir, BatchShare(Selector(), Decimal("0.5")))
    assert result.total.combined_usd * 4 == result.total.baseline_usd * 3


def test_output_cap_saves_the_cut_tokens_at_the_output_rate(workdir: Path) -> None:
    result = _run(workdir, OutputCap(Selector("feature", feature="chat"), 400))
    cut = sum(3 * n for n in range(40))  # output was 400 + 3n tokens
    assert _line(result, "chat").savings_usd == Decimal(cut) * Decimal("15") / 10**6
    assert _line(result, "search").savings_usd == 0  # 50 output tokens: under the cap


def test_cache_target_bills_the_reached_share_at_the_cache_read_rate(workdir: Path) -> None:
    result = _run(workdir, CacheTarget(Selector("under", under=1100), Decimal("0.9")))
    # Calls with input 1000 + 7n < 1100 are n = 0..14, in both features.
    reads = [round(Decimal("0.9") * (1000 + 7 * n)) for n in range(15)]
    per_feature = sum(Decimal(r) * (Decimal("3") - Decimal("0.3")) / 10**6 for r in reads)
    assert _line(result, "chat").savings_usd == per_feature
    assert _line(result, "search").savings_usd == per_feature


def test_levers_combine_in_order_and_each_is_also_shown_alone(workdir: Path) -> None:
    route = Route(Selector("feature", feature="chat"), "acme", "small")
    batch = BatchShare(Selector(), Decimal(1))
    result = _run(workdir, batch, route)
    chat = _line(result, "chat")
    # Alone: batch halves, the route keeps a third; together: a sixth of the baseline.
    assert chat.lever_usd[0] * 2 == chat.baseline_usd
    assert chat.lever_usd[1] * 3 == chat.baseline_usd
    assert chat.combined_usd * 6 == chat.baseline_usd


def test_routing_to_a_model_nothing_prices_is_a_config_error(workdir: Path) -> None:
    from spendstream.errors import ConfigError

    with pytest.raises(ConfigError, match="acme/nope"):
        _run(workdir, Route(Selector(), "acme", "nope"))


def test_self_hosting_breaks_even_where_one_gpu_costs_the_api_bill() -> None:
    # 2 $/h x 730 h = $1460 a GPU-month; 1000 tok/s at 50% = 1.314e9 tokens a GPU-month.
    a = SelfHosting(Selector(), Decimal(2), Decimal(1000), Decimal("0.5"))
    r = self_hosting(a, 200_000_000, Decimal(2000), HOURS_PER_MONTH, 7_200_000)
    assert r.tokens_per_month == 200_000_000
    assert r.tokens_per_gpu_month == 1_314_000_000
    assert (r.gpus, r.self_host_usd_per_month, r.savings_usd_per_month) == (1, 1460, 540)
    assert r.break_even_tokens_per_month == 146_000_000  # $1460 at $10 per million tokens
    # The busiest hour decodes 2000 tok/s: two GPUs flat out, one is not enough.
    assert (r.gpus_for_peak, r.serves_peak) == (2, False)


def test_self_hosting_never_wins_when_a_full_gpu_decodes_less_than_it_costs() -> None:
    a = SelfHosting(Selector(), Decimal(10), Decimal(100), Decimal("0.5"))
    # $0.10 per million tokens; a GPU-month decodes 131.4M tokens = $13.14 of API, costs $7300.
    r = self_hosting(a, 10**9, Decimal(100), HOURS_PER_MONTH * 2, 0)
    assert r.tokens_per_month == 5 * 10**8
    assert r.break_even_tokens_per_month is None
    assert r.gpus == 4 and r.savings_usd_per_month < 0 and r.serves_peak


def test_whatif_self_hosting_uses_the_selected_traffic_scaled_to_a_month(workdir: Path) -> None:
    a = SelfHosting(Selector("feature", feature="search"), Decimal(1), Decimal(1), Decimal(1))
    result = _run(workdir, hosting=a)
    h = result.self_hosting
    assert h.tokens_in_period == 20 * 50
    assert round(h.tokens_per_month, 9) == round(Decimal(1000) * HOURS_PER_MONTH / 24, 9)
    assert h.api_usd_in_period == _line(result, "search").baseline_usd
    assert h.peak_hour_tokens == 1000  # all within the first hour


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    }


def test_cli_prints_assumptions_and_exact_json_and_writes_nothing(
    workdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "prices.toml"
    config.write_text(PRICES_TOML)
    before = _files(workdir)
    common = ["--workdir", str(workdir), "--config", str(config), "--since", "2026-03-02"]
    route = ["--route", "feature:chat=acme/small"]
    assert main(["whatif", *common, *route, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["assumptions"]["levers"] == ["route feature chat to acme/small"]
    chat = next(f for f in doc["features"] if f["feature"] == "chat")
    assert Decimal(chat["combined_usd"]) * 3 == Decimal(chat["baseline_usd"])
    assert main(["whatif", *common, *route, "--self-host", "model:acme/big",
                 "--gpu-usd-per-hour", "2", "--decode-tok-s", "1000"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "lever 1: route feature chat to acme/small" in out
    assert "break-even" in out and "busiest hour" in out
    assert "1 GPU needed: $" in out and "GPU(s)" not in out
    assert _files(workdir) == before


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--route", "chat=acme/small"], "--route"),
        (["--route", "feature:chat=small"], "--route"),
        (["--batch-share", "150%"], "--batch-share"),
        (["--cache-hit-rate", "feature:chat=lots"], "--cache-hit-rate"),
        (
            ["--max-output", "-5"],
            "--max-output: '-5' is not [SELECTOR=]N with N a whole number of tokens >= 0",
        ),
        (["--route", "team-x=acme/small"], "is not a selector: all, team:NAME, feature:NAME"),
        (["--self-host", "all", "--decode-tok-s", "100"], "--gpu-usd-per-hour"),
        # Finite but enormous: the sums it enters overflow (spendstream.money).
        (
            ["--self-host", "all", "--decode-tok-s", "100", "--gpu-usd-per-hour", "9e999999"],
            "--gpu-usd-per-hour: '9e999999' must be a number >= 0 and below 1e20",
        ),
        ([], "lever"),
    ],
)
def test_cli_bad_lever_exits_2_naming_the_flag(
    workdir: Path, args: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["whatif", "--workdir", str(workdir), *args]) == 2
    assert named in capsys.readouterr().err


@pytest.fixture
def q_sum() -> Any:
    def total(workdir: Path) -> Decimal:
        import duckdb

        con = duckdb.connect(str(workdir / "warehouse" / "spendstream.duckdb"), read_only=True)
        try:
            row = con.execute("SELECT sum(cost_usd) FROM usage_facts").fetchone()
        finally:
            con.close()
        assert row is not None
        return Decimal(row[0])

    return total


def test_under_selects_fewer_input_tokens_and_cache_reads_round_half_even(workdir: Path) -> None:
    # Inputs are 1000 + 7n; at a 50% target the reads are 500, 503.5, 507, 510.5 for n = 0..3.
    def saved(reads: list[int]) -> Decimal:
        return sum(Decimal(r) * (Decimal("3") - Decimal("0.3")) / 10**6 for r in reads)

    below_1021 = _run(workdir, CacheTarget(Selector("under", under=1021), Decimal("0.5")))
    assert _line(below_1021, "chat").savings_usd == saved([500, 504, 507])  # not the 1021 call
    below_1022 = _run(workdir, CacheTarget(Selector("under", under=1022), Decimal("0.5")))
    assert _line(below_1022, "chat").savings_usd == saved([500, 504, 507, 510])


def test_cache_target_shrinks_cache_writes_that_would_exceed_the_input() -> None:
    # 1000 input tokens, 500 of them cache writes; a 90% target reads 900, so 100 stay written.
    # acme/big has no cache write rate: writes cost the input rate ($3).
    call = Call(T0, "acme", "big", False, 1000, 0, 500, 0, "t", "chat")
    engine = WhatIf(Pricer.from_config(_prices()), [CacheTarget(Selector(), Decimal("0.9"))])
    engine.add([call], [None])
    total = engine.result(Decimal(24)).total
    assert total.baseline_usd == Decimal(1000) * 3 / 10**6
    assert total.combined_usd == (Decimal(900) * Decimal("0.3") + Decimal(100) * 3) / 10**6


def test_together_a_routed_call_is_batched_at_its_new_models_price(workdir: Path) -> None:
    # The batch lever selects acme/small: alone it finds no call; after the route, every chat call.
    batch = BatchShare(Selector("model", provider="acme", model="small"), Decimal(1))
    route = Route(Selector("feature", feature="chat"), "acme", "small")
    chat = _line(_run(workdir, batch, route), "chat")
    assert chat.lever_usd[0] == chat.baseline_usd
    assert chat.combined_usd * 6 == chat.baseline_usd


def test_the_period_excludes_its_end_and_lines_are_by_baseline_highest_first(
    workdir: Path,
) -> None:
    late = _event(0, "late", ts=UNTIL)
    with Warehouse(workdir) as wh:
        wh.commit(facts=[Fact(late, Pricer.from_config(_prices()).price(late), late.ts)])
        wh.ensure_views()
    result = _run(workdir, OutputCap(Selector(), 10**9))
    assert [ln.feature for ln in result.lines] == ["chat", "search", "lab"]
    assert [ln.baseline_usd for ln in result.lines] == sorted(
        (ln.baseline_usd for ln in result.lines), reverse=True
    )
    assert (result.total.calls, result.total.unpriced_calls) == (65, 5)


def test_stored_is_the_landed_cost_and_baseline_the_current_price(
    workdir: Path, q_sum: Any
) -> None:
    import tomllib

    discounted = config_from_dict(
        tomllib.loads(PRICES_TOML + "\n[[prices.discount]]\npercent = 10\n"), "test"
    ).prices
    result = run_whatif(
        workdir, SINCE, UNTIL, Pricer.from_config(discounted), [OutputCap(Selector(), 10**9)]
    )
    assert result.total.stored_usd == q_sum(workdir)
    assert result.total.baseline_usd == q_sum(workdir) * Decimal("0.9")


def test_self_hosting_is_compared_with_the_api_bill_before_any_lever(workdir: Path) -> None:
    a = SelfHosting(Selector("feature", feature="search"), Decimal(1), Decimal(1), Decimal(1))
    result = _run(workdir, Route(Selector(), "acme", "small"), hosting=a)
    search = _line(result, "search")
    assert search.combined_usd < search.baseline_usd
    assert result.self_hosting.api_usd_in_period == search.baseline_usd


def test_one_gpu_that_decodes_exactly_its_break_even_volume_breaks_even() -> None:
    # $3.60/h x 730 h = $2628 a GPU-month; 1000 tok/s x 100% x 3600 x 730 = 2.628e9 tokens a
    # GPU-month; the API costs $1 per million tokens: one GPU's volume costs $2628 on the API.
    a = SelfHosting(Selector(), Decimal("3.6"), Decimal(1000), Decimal(1))
    r = self_hosting(a, 10**6, Decimal(1), HOURS_PER_MONTH, 3_600_000)
    assert r.tokens_per_gpu_month == 2_628_000_000
    assert r.break_even_tokens_per_month == 2_628_000_000
    # The busiest hour decodes 1000 tok/s: the one GPU, flat out, serves it.
    assert (r.gpus, r.gpus_for_peak, r.serves_peak) == (1, 1, True)


def test_a_call_routed_where_nothing_prices_it_keeps_its_baseline_and_is_counted(
    workdir: Path,
) -> None:
    import tomllib

    # acme/flex-only is priced for the flex service tier alone: the routed calls have none.
    toml = PRICES_TOML + (
        '\n[[prices.model]]\nprovider = "acme"\nmodel = "flex-only"\nservice_tier = "flex"\n'
        "input_per_mtok = 0.01\noutput_per_mtok = 0.01\n"
    )
    prices = config_from_dict(tomllib.loads(toml), "test").prices
    route = Route(Selector("feature", feature="chat"), "acme", "flex-only")
    result = run_whatif(workdir, SINCE, UNTIL, Pricer.from_config(prices), [route])
    chat = _line(result, "chat")
    assert result.still_unpriced == chat.calls == 40
    assert chat.baseline_usd > 0
    assert chat.combined_usd == chat.lever_usd[0] == chat.baseline_usd


def test_cli_table_names_untagged_calls_apart_from_the_total_and_signs_money_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Calls with no team and no feature are a line of their own: the table said "(total)"
    # for them too, so two "(total)" rows disagreed. A loss was printed "$-1,234.56".
    pricer = Pricer.from_config(_prices())
    events = [_event(n, "chat") for n in range(3)]
    events += [_event(n, "x").model_copy(update={"team": None, "feature": None}) for n in range(2)]
    facts = [Fact(e, c, e.ts) for e, c in zip(events, pricer.price_batch(events), strict=True)]
    work = tmp_path / "work"
    with Warehouse(work) as wh:
        wh.commit(facts=facts)
        wh.ensure_views()
    config = tmp_path / "prices.toml"
    config.write_text(PRICES_TOML)
    common = ["--workdir", str(work), "--config", str(config), "--since", "2026-03-02"]
    assert main(["whatif", *common, "--route", "all=acme/small", "--self-host", "all",
                 "--gpu-usd-per-hour", "2", "--decode-tok-s", "1000"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    firsts = [line.split()[0] for line in out.splitlines() if line.startswith(("t ", "(u", "(t"))]
    assert firsts == ["t", "(untagged)", "(total)"]
    assert "monthly savings of self-hosting: -$1,4" in out
    assert "$-" not in out
    assert main(["whatif", *common, "--route", "all=acme/small", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [f["team"] for f in doc["features"]] == ["t", None]
    assert doc["total"]["team"] == "(total)"
