"""Words shared by the sinks: a one-line summary, the amount, where to investigate."""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal
from urllib.parse import quote

from spendstream.money import MONEY_CONTEXT
from spendstream.scopes import scope_fields
from spendstream.wording import plural, written_usd

from ..notification import Notification

__all__ = ["amount", "investigate_link", "investigate_sql", "sql_literal", "summary"]

_USD_KINDS = {"budget_threshold", "budget_exceeded", "hourly_anomaly"}


_BUDGET_KINDS = {"budget_threshold", "budget_exceeded"}


def _fmt(kind: str, value: Decimal) -> str:
    if kind in _USD_KINDS:
        return f"${value.quantize(Decimal('0.01')):,}"
    return f"{value.normalize():f}"


def _threshold(kind: str, value: Decimal) -> str:
    """A budget's threshold is a level of an amount someone wrote: finer than a cent (50% of
    $0.05) it keeps its digits, which cents would round to $0.02 beside a spend of $0.03. An
    anomaly's (a factor of a mean) is rounded like any spend."""
    return written_usd(value) if kind in _BUDGET_KINDS else _fmt(kind, value)


def _value(kind: str, value: Decimal, threshold: Decimal) -> str:
    """A budget's spend beside a threshold finer than a cent has the threshold's places,
    rounded down, so a spend that reached its level never reads below it (in cents, a spend
    of exactly $0.025 read '$0.02 (threshold $0.025)'). Otherwise cents, as ``_fmt``."""
    if kind in _BUDGET_KINDS and threshold.is_finite() and value.is_finite():
        exponent = threshold.normalize(MONEY_CONTEXT).as_tuple().exponent
        if isinstance(exponent, int) and exponent < -2:
            step = Decimal(1).scaleb(exponent)
            return f"${value.quantize(step, rounding=ROUND_FLOOR, context=MONEY_CONTEXT):,}"
    return _fmt(kind, value)


def amount(n: Notification) -> str:
    a = n.alert
    return f"{_value(a.kind, a.value, a.threshold)} (threshold {_threshold(a.kind, a.threshold)})"


def summary(n: Notification, limit: int = 1024) -> str:
    a = n.alert
    if n.action == "resolve":
        text = f"Resolved: {a.kind} on {a.scope}"
        if n.count > 1:
            text += f" and {plural(n.count - 1, 'more alert')} grouped with it"
    elif n.count > 1:
        group = ", ".join(f"{k}={v}" for k, v in n.group.items())
        text = f"{n.count} {a.kind} alerts ({group}); first: {a.scope}: {a.message}"
    else:
        text = f"{a.kind} on {a.scope}: {a.message}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


# Characters a value may keep as written inside the SQL literal. Everything else (quotes,
# backslashes, `$`, backticks, `!`, control and invisible characters) is spelled chr(n):
# the SQL means the same, and pasted anywhere (a shell's double quotes, a Slack code
# block, a terminal) it can neither end the literal, run a command nor break the markup.
_PLAIN = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -_.:/@+=,;#%^()[]{}?~*<>&|"
)


def _printable(ch: str) -> bool:
    import unicodedata

    return ch in _PLAIN or (ord(ch) > 127 and unicodedata.category(ch)[0] not in "CZ")


def sql_literal(value: str) -> str:
    """``value`` as a DuckDB string expression that holds no character a shell or chat acts on."""
    parts: list[str] = []
    run = ""
    for ch in value:
        if _printable(ch):
            run += ch
            continue
        if run:
            parts.append(f"'{run}'")
            run = ""
        parts.append(f"chr({ord(ch)})")
    if run or not parts:
        parts.append(f"'{run}'")
    return " || ".join(parts)


def investigate_sql(n: Notification) -> str:
    """A query for ``spendstream sql`` or any DuckDB session: the scope's spend, or the alert's
    history. Values are SQL literals (``sql_literal``); no shell command is ever built."""
    fields = scope_fields(n.alert.scope)
    if fields:
        ((column, value),) = fields.items()
        return (
            "SELECT date_trunc('minute', ts) AS minute, count(*) AS calls, sum(cost_usd) AS usd "
            f"FROM usage_facts WHERE {column} = {sql_literal(value)} GROUP BY ALL ORDER BY minute"
        )
    return f"SELECT * FROM alerts WHERE dedup_key = {sql_literal(n.alert.dedup_key)} ORDER BY ts"


def investigate_link(n: Notification, base_url: str | None) -> str | None:
    if not base_url:
        return None
    sep = "&" if "?" in base_url else "?"
    return f"{base_url}{sep}scope={quote(n.alert.scope, safe='')}"
