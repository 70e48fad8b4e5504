from __future__ import annotations

import io
import logging

import pytest

from spendstream.alerts.delivery import HttpDeliverer, RetryPolicy
from spendstream.alerts.notification import Notification
from spendstream.alerts.sinks.console import ConsoleSink

from ..factories import T0, make_alert


def test_console_writes_one_line_per_notification() -> None:
    out = io.StringIO()
    sink = ConsoleSink(name="console", out=out)
    d = HttpDeliverer(RetryPolicy())
    sink.deliver(Notification("trigger", "k", "r", make_alert()), d)
    sink.deliver(Notification("resolve", "k", "r", make_alert(), opened_at=T0), d)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("[CRITICAL] runaway_session on session:s1")
    assert lines[1].startswith("[RESOLVED] Resolved: runaway_session on session:s1")


def test_the_log_stream_goes_through_logging(caplog: pytest.LogCaptureFixture) -> None:
    sink = ConsoleSink(name="log", stream="log")
    with caplog.at_level(logging.INFO, logger="spendstream.alerts.console"):
        sink.deliver(Notification("trigger", "k", "r", make_alert()), HttpDeliverer(RetryPolicy()))
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "session:s1" in caplog.records[0].getMessage()


def test_a_resolve_is_logged_at_info(caplog: pytest.LogCaptureFixture) -> None:
    sink = ConsoleSink(name="log", stream="log")
    resolve = Notification("resolve", "k", "r", make_alert(), opened_at=T0)
    with caplog.at_level(logging.INFO, logger="spendstream.alerts.console"):
        sink.deliver(resolve, HttpDeliverer(RetryPolicy()))
    assert [(r.levelname, r.getMessage()[:10]) for r in caplog.records] == [("INFO", "[RESOLVED]")]


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_each_stream_writes_where_it_says(stream: str, capsys: pytest.CaptureFixture[str]) -> None:
    ConsoleSink(name="c", stream=stream).deliver(  # type: ignore[arg-type]
        Notification("trigger", "k", "r", make_alert()), HttpDeliverer(RetryPolicy())
    )
    out, err = capsys.readouterr()
    written, silent = (out, err) if stream == "stdout" else (err, out)
    assert written.startswith("[CRITICAL] runaway_session on session:s1") and silent == ""


def test_the_line_shows_the_event_time_with_its_utc_offset() -> None:
    out = io.StringIO()
    ConsoleSink(name="c", out=out).deliver(
        Notification("trigger", "k", "r", make_alert()), HttpDeliverer(RetryPolicy())
    )
    assert " | since 2026-11-23T12:00:00+00:00 | alerts=1 key=k" in out.getvalue()


def test_a_grouped_resolve_counts_the_others_in_words() -> None:
    out = io.StringIO()
    sink = ConsoleSink(name="console", out=out)
    d = HttpDeliverer(RetryPolicy())
    for count in (2, 3):
        sink.deliver(Notification("resolve", "k", "r", make_alert(), count=count, opened_at=T0), d)
    lines = out.getvalue().splitlines()
    assert "and 1 more alert grouped with it" in lines[0]
    assert "and 2 more alerts grouped with it" in lines[1]


@pytest.mark.parametrize(
    ("kind", "threshold", "written"),
    [
        ("budget_threshold", "0.025", "$0.029 (threshold $0.025)"),  # 50% of $0.05
        ("budget_exceeded", "80.0", "$0.03 (threshold $80.00)"),
        ("hourly_anomaly", "0.025", "$0.03 (threshold $0.02)"),  # a factor of a mean: cents
    ],
)
def test_a_budget_threshold_finer_than_a_cent_keeps_its_digits(
    kind: str, threshold: str, written: str
) -> None:
    # It said "$0.03 (threshold $0.02)" for 50% of a $0.05 budget.
    out = io.StringIO()
    alert = make_alert("team:a", kind=kind, value="0.0296", threshold=threshold)
    ConsoleSink(name="console", out=out).deliver(
        Notification("trigger", "k", "r", alert), HttpDeliverer(RetryPolicy())
    )
    assert f"| {written} |" in out.getvalue()


@pytest.mark.parametrize(
    ("value", "threshold", "written"),
    [
        ("0.025", "0.025", "$0.025 (threshold $0.025)"),  # cents: "$0.02 (threshold $0.025)"
        ("0.034", "0.0333", "$0.0340 (threshold $0.0333)"),  # cents: "$0.03"
        ("1234.5678", "1234.567", "$1,234.567 (threshold $1,234.567)"),
        ("12.349", "10", "$12.35 (threshold $10.00)"),  # a threshold in cents: cents
    ],
)
def test_a_budgets_spend_never_reads_below_the_threshold_it_reached(
    value: str, threshold: str, written: str
) -> None:
    out = io.StringIO()
    alert = make_alert("team:a", kind="budget_threshold", value=value, threshold=threshold)
    ConsoleSink(name="console", out=out).deliver(
        Notification("trigger", "k", "r", alert), HttpDeliverer(RetryPolicy())
    )
    assert f"| {written} |" in out.getvalue()
