"""The configuration model: contract section 6 keys, defaults, exact money, errors that name keys."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import annotated_types
import pytest

from spendstream.cli import main
from spendstream.config import MAX_DURATION_S, Config, config_from_dict, load_config
from spendstream.config_reference import iter_keys
from spendstream.errors import ConfigError


def test_defaults_match_the_contract() -> None:
    c = Config()
    assert c.kafka.bootstrap_servers == "localhost:9092"
    assert c.anomaly.factor == Decimal("3.0")
    assert c.anomaly.min_baseline_usd == Decimal("1.0")
    assert c.anomaly.scopes == ["global", "team", "feature", "api_key"]
    assert (c.runaway.max_calls_per_minute, c.runaway.max_session_turns) == (120, 100)
    assert c.runaway.max_session_cost_usd == Decimal("50.0")
    assert c.runaway.max_session_minutes == Decimal("30")
    assert c.runaway.max_attempts == 5
    assert c.budget == []
    assert c.breaker.open_on == ["runaway_rate", "runaway_session", "budget_exceeded"]
    # Pinned here, not only by the generated docs/configuration.md (regenerated, a changed
    # default would pass unnoticed): the rate breaker's 5-minute cool-down that the
    # getting-started guide promises, the smallest lease, the retry storm's bar.
    assert c.breaker.rate_cooldown_s == 300
    assert c.leases.min_grant_usd == Decimal("0.01")
    assert c.detection.retry_min_calls == 100


def test_contract_example_loads_with_exact_decimals(tmp_path: Path) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text(
        """
[kafka]
bootstrap_servers = "broker:9092"

[[budget]]
scope = "team:search"
period = "month"
amount_usd = 500.0
alert_at = [0.5, 0.8, 1.0]
hard_limit = 3.0

[[prices.model]]
provider = "anthropic"
model = "claude-sonnet-4-5"
input_per_mtok = 3.00
output_per_mtok = 15.00
cache_read_per_mtok = 0.30
cache_write_per_mtok = 3.75
batch_discount = 0.5

[[prices.discount]]
provider = "openai"
percent = 20
"""
    )
    c = load_config(cfg)
    assert c.kafka.bootstrap_servers == "broker:9092"
    assert c.budget[0].alert_at == [Decimal("0.5"), Decimal("0.8"), Decimal("1.0")]
    price = c.prices.model[0]
    assert price.cache_read_per_mtok == Decimal("0.3")
    assert price.cache_write_per_mtok == Decimal("3.75")
    assert isinstance(price.input_per_mtok, Decimal)
    assert c.prices.discount[0].percent == Decimal(20)


def test_env_var_names_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text("[runaway]\nmax_attempts = 9\n")
    monkeypatch.setenv("SPENDSTREAM_CONFIG", str(cfg))
    assert load_config().runaway.max_attempts == 9


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"runaway": {"max_calls_per_minit": 5}}, "runaway.max_calls_per_minit"),
        ({"anomaly": {"factor": "three"}}, "anomaly.factor"),
        ({"budget": [{"scope": "team:x", "period": "week", "amount_usd": 1}]}, "budget.0.period"),
        ({"budget": [{"scope": "galaxy:x", "amount_usd": 1}]}, "budget.0"),
        ({"kafak": {}}, "kafak"),
    ],
)
def test_bad_keys_raise_config_error_naming_the_key(data: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config_from_dict(data, "test.toml")
    assert key in str(exc.value)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"budget": [{"scope": "team:x", "amount_usd": "9e999999"}]}, "budget.0.amount_usd"),
        (
            {"budget": [{"scope": "team:x", "amount_usd": 1, "hard_limit": "1e20"}]},
            "budget.0.hard_limit",
        ),
        ({"anomaly": {"factor": "1e20"}}, "anomaly.factor"),
        (
            {
                "prices": {
                    "model": [
                        {
                            "provider": "p",
                            "model": "m",
                            "input_per_mtok": "1e21",
                            "output_per_mtok": 1,
                        }
                    ]
                }
            },
            "prices.model.0.input_per_mtok",
        ),
    ],
)
def test_a_number_of_1e20_or_more_is_refused_where_sums_would_overflow(
    data: dict[str, object], key: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        config_from_dict(data, "test.toml")
    assert f"{key}: must be below 1e20" in str(exc.value)


def test_the_largest_amount_below_1e20_is_a_budget() -> None:
    largest = "99999999999999999999.999999999999999999"
    cfg = config_from_dict({"budget": [{"scope": "team:x", "amount_usd": largest}]}, "test.toml")
    assert cfg.budget[0].amount_usd == Decimal(largest)


DURATIONS = ("breaker.rate_cooldown_s", "breaker.stay_open_retention_s",
             "detection.allowed_lateness_s", "detection.session_idle_s")  # fmt: skip


@pytest.mark.parametrize("key", DURATIONS)
def test_a_duration_past_ten_years_is_refused_naming_the_key(key: str) -> None:
    # Each was accepted and then overflowed datetime arithmetic in every ingest and worker.
    section, name = key.split(".")
    with pytest.raises(ConfigError) as exc:
        config_from_dict({section: {name: MAX_DURATION_S + 1}}, "test.toml")
    assert f"{key}: Input should be less than or equal to {MAX_DURATION_S}" in str(exc.value)


def test_every_duration_key_is_bounded_and_the_largest_ones_run(tmp_path: Path) -> None:
    durations = [
        path
        for path, field in iter_keys()
        if path.endswith(("_s", "_ms", "_minutes"))
        and not any(isinstance(m, annotated_types.Le | annotated_types.Lt) for m in field.metadata)
    ]
    assert durations == []
    config = tmp_path / "c.toml"
    sections: dict[str, list[str]] = {"runaway": [f"max_session_minutes = {MAX_DURATION_S // 60}"]}
    for key in DURATIONS:
        section, name = key.split(".")
        sections.setdefault(section, []).append(f"{name} = {MAX_DURATION_S}")
    config.write_text("".join(f"[{k}]\n" + "\n".join(v) + "\n" for k, v in sections.items()))
    events = tmp_path / "e.jsonl"
    events.write_text(
        "".join(
            json.dumps({"event_id": f"e{i}", "ts": f"2026-03-01T00:0{i}:00Z", "provider": "openai",
                        "model": "gpt-4o", "input_tokens": 10, "output_tokens": 5,
                        "session_id": "s", "api_key_id": "k", "request_id": "r"}) + "\n"
            for i in range(3)
        )
    )  # fmt: skip
    work = tmp_path / "w"
    assert main(["ingest", str(events), "--config", str(config), "--workdir", str(work)]) == 0


def test_unreadable_and_invalid_toml_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[kafka\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_a_config_file_with_a_byte_order_mark_loads_and_utf16_is_a_config_error(
    tmp_path: Path,
) -> None:
    # Notepad saves UTF-8 with a BOM (tomllib: "Invalid statement (at line 1, column 1)");
    # PowerShell's > writes UTF-16 (a UnicodeDecodeError traceback).
    text = "[runaway]\r\nmax_calls_per_minute = 5\r\n"
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert load_config(bom).runaway.max_calls_per_minute == 5
    for bom16 in (b"\xff\xfe", b"\xfe\xff"):  # little- and big-endian
        utf16 = tmp_path / "utf16.toml"
        codec = "utf-16-le" if bom16 == b"\xff\xfe" else "utf-16-be"
        utf16.write_bytes(bom16 + text.encode(codec))
        with pytest.raises(ConfigError, match=r"utf16.toml is UTF-16 text .*; save it as UTF-8"):
            load_config(utf16)
    latin = tmp_path / "latin.toml"
    latin.write_bytes('[[budget]]\nscope = "team:caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin.toml is not UTF-8 text \(line 2\); save"):
        load_config(latin)


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (
            {"kafka": {"bootstrap_server": "x"}},
            "kafka.bootstrap_server: unknown key; did you mean bootstrap_servers?",
        ),
        ({"kafak": {}}, "kafak: unknown key; did you mean kafka?"),
        (
            {"budget": [{"scope": "global", "amount_usd": 1, "perod": "day"}]},
            "budget.0.perod: unknown key; did you mean period?",
        ),
        (
            {"alerts": {"sink": [{"type": "slack", "name": "s", "webhook_url_envv": "X"}]}},
            "alerts.sink.0.slack.webhook_url_envv: unknown key; did you mean webhook_url_env?",
        ),
        (
            {"alerts": {"delivery": {"max_attempt": 3}}},
            "alerts.delivery.max_attempt: unknown key; did you mean max_attempts?",
        ),
        ({"runaway": {"max_calls_per_minit": 5}}, "did you mean max_calls_per_minute?"),
    ],
)
def test_an_unknown_key_suggests_the_nearest_known_one(data: dict[str, object], said: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config_from_dict(data, "test.toml")
    assert said in str(exc.value)
    assert "docs/configuration.md" in str(exc.value)


@pytest.mark.parametrize("key", ["budget", "alerts.sink", "alerts.route"])
def test_a_single_bracket_table_where_an_array_of_tables_belongs_says_double_brackets(
    tmp_path: Path, key: str
) -> None:
    # `[budget]` read "budget: Input should be a valid list", which did not say what to write.
    path = tmp_path / "c.toml"
    path.write_text(f'[{key}]\nname = "x"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert (
        f"  {key}: Input should be a valid list; each entry is its own [[{key}]] table "
        f"(double brackets), not [{key}]"
    ) in str(exc.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[otel.tag_attributes]\na = "b"\n', "otel.tag_attributes"),  # a list of values
        (
            '[[budget]]\nscope = "global"\nperiod = "day"\namount_usd = 1\n'
            "[budget.alert_at]\na = 1\n",
            "budget.0.alert_at",
        ),
    ],
)
def test_a_table_where_a_list_of_values_belongs_gets_no_double_bracket_hint(
    tmp_path: Path, text: str, key: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert f"  {key}: Input should be a valid list\n" in str(exc.value)


@pytest.mark.parametrize(
    ("sink", "said"),
    [
        ({"name": "s", "webhook_url_env": "X"}, "alerts.sink.0.type: Field required"),
        (
            {"name": "s", "type": "slak", "webhook_url_env": "X"},
            "alerts.sink.0.type: 'slak' is not one of pagerduty, slack, webhook, console;"
            " did you mean slack?",
        ),
    ],
)
def test_a_sink_without_a_known_type_names_the_type_key(sink: dict[str, object], said: str) -> None:
    # It said "alerts.sink.0: Unable to extract tag using discriminator 'type'".
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"alerts": {"sink": [sink]}}, "test.toml")
    assert said in str(exc.value)
    assert "discriminator" not in str(exc.value)


@pytest.mark.parametrize("key", ["zzzz", "threshold"])
def test_a_key_like_nothing_known_gets_no_guess(key: str) -> None:
    # "threshold" is about half like "method": no guess beats a misleading one.
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"anomaly": {key: 1}}, "test.toml")
    assert f"anomaly.{key}: unknown key\n" in str(exc.value) + "\n"
    assert "did you mean" not in str(exc.value)


@pytest.mark.parametrize(
    ("budget", "named"),
    [
        ({"amount_usd": "6E+19", "hard_limit": 2}, "amount_usd x hard_limit 2 is 1.200000E+20 USD"),
        ({"amount_usd": "6E+19", "alert_at": [0.5, 1.7]}, "amount_usd x alert_at 1.7 is 1.0200"),
        ({"amount_usd": "5E+19", "hard_limit": 2}, "amount_usd x hard_limit 2 is 1.000000E+20 USD"),
    ],
)
def test_a_budget_bar_of_1e20_or_more_is_refused(budget: dict[str, object], named: str) -> None:
    # Each bar is an alert's threshold, a DECIMAL(38,18) column: both factors were below 1e20
    # and their product was not.
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"budget": [{"scope": "team:x", **budget}]}, "test.toml")
    assert "budget.0: " + named in str(exc.value)
    assert "a budget's bar must be below 1e20" in str(exc.value)
    largest = "99999999999999999999.999999999999999999"
    ok = {"scope": "team:x", "amount_usd": largest, "hard_limit": 1, "alert_at": [1]}
    assert config_from_dict({"budget": [ok]}, "t.toml").budget[0].hard_limit == 1


def test_a_budget_level_written_as_a_percentage_or_dollars_is_warned_of(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # alert_at = [50, 80] is 50x and 80x the budget: alerts that never fire, silently.
    toml = tmp_path / "b.toml"
    toml.write_text(
        '[[budget]]\nscope = "team:search"\namount_usd = 1000\n'
        "alert_at = [0.5, 9.99, 10, 80]\nhard_limit = 100\n"
        '[[budget]]\nscope = "global"\namount_usd = 5\nalert_at = [1.5]\nhard_limit = 1.2\n'
    )
    assert main(["query", "cost_by_team", "--config", str(toml), "--workdir", str(tmp_path)]) == 2
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning")]
    assert warned == [
        "warning: [[budget]] team:search: alert_at 10 is 10x amount_usd ($1000 -> $10000); "
        "alert_at takes fractions of amount_usd (0.8 is 80%)",
        "warning: [[budget]] team:search: alert_at 80 is 80x amount_usd ($1000 -> $80000); "
        "alert_at takes fractions of amount_usd (0.8 is 80%)",
        "warning: [[budget]] team:search: hard_limit 100 is 100x amount_usd ($1000 -> $100000); "
        "hard_limit takes fractions of amount_usd (0.8 is 80%)",
    ]


def test_a_boolean_is_no_number() -> None:
    # TOML's true is not 1 (bool is an int in Python: _to_decimal would have made it 1).
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"anomaly": {"factor": True}}, "test.toml")
    assert "anomaly.factor: Decimal input should be" in str(exc.value)


@pytest.mark.parametrize(
    ("detection", "skew"),
    [({}, 300), ({"allowed_lateness_s": 1000}, 300), ({"allowed_lateness_s": 100}, 100),
     ({"allowed_lateness_s": 0}, 0), ({"allowed_lateness_s": 100, "max_future_skew_s": 100}, 100)],
)  # fmt: skip
def test_max_future_skew_defaults_to_300_or_the_allowed_lateness_if_smaller(
    detection: dict[str, int], skew: int
) -> None:
    assert config_from_dict({"detection": detection}).detection.max_future_skew_s == skew
    if not detection:
        assert Config().detection.max_future_skew_s == 300


def test_a_future_skew_past_the_allowed_lateness_is_refused_naming_both() -> None:
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"detection": {"allowed_lateness_s": 100, "max_future_skew_s": 101}})
    assert "max_future_skew_s (101) must not exceed allowed_lateness_s (100)" in str(exc.value)


def test_the_largest_lease_grant_may_equal_the_smallest_and_not_be_below_it() -> None:
    same = config_from_dict({"leases": {"min_grant_usd": 1, "max_grant_usd": 1}})
    assert same.leases.max_grant_usd == same.leases.min_grant_usd == 1
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"leases": {"min_grant_usd": 1, "max_grant_usd": "0.99"}})
    assert "max_grant_usd (0.99) is below min_grant_usd (1)" in str(exc.value)


@pytest.mark.parametrize("location", ["/srv/tables", "file:///srv/tables", "s3://bucket/p"])
def test_a_warehouse_location_may_be_a_path_a_file_url_or_s3(location: str) -> None:
    assert config_from_dict({"warehouse": {"location": location}}).warehouse.location == location


# -- dated price rows --------------------------------------------------------------------

_ROW = 'provider = "acme"\nmodel = "m1"\ninput_per_mtok = 1\noutput_per_mtok = 2\n'


def _prices(tmp_path: Path, text: str) -> Config:
    cfg = tmp_path / "dated.toml"
    cfg.write_text(text)
    return load_config(cfg)


def test_effective_dates_read_as_utc_instants_from_dates_date_times_and_strings(
    tmp_path: Path,
) -> None:
    from datetime import UTC, datetime

    c = _prices(
        tmp_path,
        f"[[prices.model]]\n{_ROW}effective_from = 2026-03-01\n"
        "effective_until = 2026-04-01T00:00:00-08:00\n"
        '[[prices.discount]]\npercent = 10\neffective_from = "2026-05-01T08:30:00Z"\n'
        '[[prices.premium]]\npercent = 5\neffective_until = "2026-06-01"\n',
    )
    row = c.prices.model[0]
    assert row.effective_from == datetime(2026, 3, 1, tzinfo=UTC)
    assert row.effective_until == datetime(2026, 4, 1, 8, tzinfo=UTC)
    assert c.prices.discount[0].effective_from == datetime(2026, 5, 1, 8, 30, tzinfo=UTC)
    assert c.prices.discount[0].effective_until is None
    assert c.prices.premium[0].effective_until == datetime(2026, 6, 1, tzinfo=UTC)
    undated = _prices(tmp_path, f"[[prices.model]]\n{_ROW}").prices.model[0]
    assert (undated.effective_from, undated.effective_until) == (None, None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            f"[[prices.model]]\n{_ROW}effective_from = 2026-03-01T00:00:00\n",
            "prices.model.0.effective_from: 2026-03-01T00:00:00 has no offset",
        ),
        (
            '[[prices.discount]]\npercent = 1\neffective_from = "2026-02-30"\n',
            "prices.discount.0.effective_from: '2026-02-30' is neither an RFC 3339",
        ),
        (
            "[[prices.discount]]\npercent = 1\neffective_until = 9999-12-31T23:00:00-12:00\n",
            "prices.discount.0.effective_until: 9999-12-31T23:00:00-12:00 is "
            "outside the years 1-9999 in UTC",
        ),
        (
            '[[prices.premium]]\npercent = 1\neffective_until = "next week"\n',
            "prices.premium.0.effective_until: 'next week' is neither",
        ),
        (
            f"[[prices.model]]\n{_ROW}effective_from = 2026-03-01\neffective_until = 2026-03-01\n",
            "prices.model.0: effective_until (2026-03-01) must be after "
            "effective_from (2026-03-01)",
        ),
        (
            f"[[prices.model]]\n{_ROW}effective_from = 2026-03-01\n"
            f"[[prices.model]]\n{_ROW.replace('acme', 'ACME')}effective_from = 2026-03-01T00:00:00Z\n",
            "prices.model.0 and prices.model.1 (the same match) both have effective_from "
            "2026-03-01: one must go",
        ),
        (
            "[[prices.discount]]\npercent = 1\neffective_from = 2026-03-01\n"
            "effective_until = 2026-05-01\n"
            "[[prices.discount]]\npercent = 2\neffective_from = 2026-04-01\n",
            "prices.discount.0 and prices.discount.1 (the same match) overlap: effective_until "
            "2026-05-01 is after the next row's effective_from 2026-04-01",
        ),
        (
            '[[prices.premium]]\npercent = 1\nregion = "eu"\neffective_until = 2026-03-01\n'
            '[[prices.premium]]\npercent = 2\nregion = "EU"\neffective_until = 2026-04-01\n',
            "prices.premium.0 and prices.premium.1 (the same match) both have effective_from "
            "always",
        ),
    ],
)
def test_bad_or_clashing_dates_are_refused_naming_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        _prices(tmp_path, text)
    assert message in str(exc.value)


def test_a_price_history_and_rows_of_other_matches_may_share_dates(tmp_path: Path) -> None:
    c = _prices(
        tmp_path,
        # an undated baseline, two dated rows meeting end to end, an open-ended one after a
        # gap, and a row for another tier with the same date: no clash.
        f"[[prices.model]]\n{_ROW}"
        f"[[prices.model]]\n{_ROW}effective_until = 2026-03-01\n"
        f"[[prices.model]]\n{_ROW}effective_from = 2026-03-01\neffective_until = 2026-04-01\n"
        f"[[prices.model]]\n{_ROW}effective_from = 2026-05-01\n"
        f'[[prices.model]]\n{_ROW}service_tier = "flex"\neffective_from = 2026-05-01\n'
        # open rows of one match: each ends where the next starts
        "[[prices.discount]]\npercent = 1\neffective_from = 2026-01-01\n"
        "[[prices.discount]]\npercent = 2\neffective_from = 2026-02-01\n",
    )
    assert len(c.prices.model) == 5 and len(c.prices.discount) == 2


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (
            {"budget": [{"scope": "team:x", "amount_usd": "5$"}]},
            '  budget.0.amount_usd: Input should be a valid decimal (got "5$")\n',
        ),
        (
            {"budget": [{"scope": "team:x", "amount_usd": 5, "period": "week"}]},
            "  budget.0.period: Input should be 'month', 'day' or 'hour' (got \"week\")\n",
        ),
        (
            {"runaway": {"max_calls_per_minute": "ten"}},
            "  runaway.max_calls_per_minute: Input should be a valid integer, unable to parse "
            'string as an integer (got "ten")\n',
        ),
    ],
)
def test_a_value_of_the_wrong_type_or_choice_is_shown_as_written(
    data: dict[str, object], line: str
) -> None:
    # "budget.0.amount_usd: Input should be a valid decimal" named the key, not what it held:
    # the "$" written into the number was left to find.
    with pytest.raises(ConfigError) as exc:
        config_from_dict(data, "t.toml")
    assert line in str(exc.value)


def test_a_validators_message_is_not_prefixed_with_pydantics_value_error() -> None:
    # "budget.0: Value error, scope 'search' must be ...": the prefix is pydantic's, not a
    # word a user wrote or can act on.
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"budget": [{"scope": "search", "amount_usd": 1}]}, "t.toml")
    assert "  budget.0: scope 'search' must be 'global' or '<kind>:<value>'" in str(exc.value)
    assert "Value error" not in str(exc.value)


@pytest.mark.parametrize(
    ("sink", "line"),
    [
        (
            {"name": "hook", "type": "webhook", "url": "127.0.0.1:18999/spend"},
            "  alerts.sink.0.webhook.url: '127.0.0.1:18999/spend' is not an http:// or https:// "
            "URL with a host (e.g. http://127.0.0.1:18999/spend)\n",
        ),
        (
            {"name": "hook", "type": "webhook", "url": "localhost:8080/hook"},
            "  alerts.sink.0.webhook.url: 'localhost:8080/hook' is not an http:// or https:// "
            "URL with a host (e.g. http://localhost:8080/hook)\n",
        ),
        (
            {"name": "pd", "type": "pagerduty", "url": "ftp://events.example/v2"},
            "  alerts.sink.0.pagerduty.url: 'ftp://events.example/v2' is not an http:// or "
            "https:// URL",
        ),
    ],
)
def test_a_sink_url_without_its_scheme_is_refused_naming_the_key(
    sink: dict[str, object], line: str
) -> None:
    # It loaded, then every notification failed 8 times ("UnsupportedProtocol"), ~30 s
    # each, while ingest waited, before being dead-lettered.
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"alerts": {"sink": [sink]}}, "t.toml")
    assert line in str(exc.value)
    ok = {**sink, "url": "https://hooks.example/spend"}
    assert config_from_dict({"alerts": {"sink": [ok]}}, "t.toml").alerts.sink[0]


def test_a_route_naming_a_mistyped_sink_is_told_the_one_meant_and_the_names_there_are() -> None:
    sinks = [
        {"name": "hook", "type": "webhook", "url": "http://127.0.0.1:1/x"},
        {"name": "console", "type": "console"},
    ]
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"alerts": {"sink": sinks, "route": [{"name": "r", "sinks": ["hok"]}]}})
    assert (
        "alerts: route 'r' names unknown sink(s): hok; did you mean hook? "
        "(the [[alerts.sink]] names: hook, console)"
    ) in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"alerts": {"route": [{"name": "r", "sinks": ["slack"]}]}})
    assert "names unknown sink(s): slack (no [[alerts.sink]] is configured)" in str(exc.value)


def test_a_single_value_where_a_list_belongs_is_shown_with_the_list_to_write() -> None:
    # `scopes = "team"` read "anomaly.scopes: Input should be a valid list".
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"anomaly": {"scopes": "team"}}, "t.toml")
    assert (
        '  anomaly.scopes: Input should be a valid list (got "team"; a list is written ["team"])\n'
    ) in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"budget": [{"scope": "team:x", "amount_usd": 1, "alert_at": 0.5}]})
    assert "budget.0.alert_at: Input should be a valid list (got 0.5; a list is written [0.5])" in (
        str(exc.value)
    )
