"""Amounts and counts as people read them, in alert messages, summaries and the report."""

from __future__ import annotations

import re
from decimal import Decimal

from spendstream.money import MONEY_CONTEXT

__all__ = [
    "clipped",
    "escape_controls",
    "exact_usd",
    "plural",
    "usd",
    "usd_past",
    "usd_value",
    "written_usd",
]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CENT = Decimal("0.01")
_MILLIONTH = Decimal("1e-6")


def escape_controls(text: str) -> str:
    """``text`` with its control characters written ``\\xNN``: text a record held (a key,
    a value in a reason) goes to terminals, and one holding ESC [2J cleared the screen."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def clipped(text: str, width: int) -> str:
    """``text``, or its first ``width - 3`` characters and ``...`` when it is longer than
    ``width``: a message names what a record held, it does not carry it."""
    return text if len(text) <= width else f"{text[: width - 3]}..."


def usd(value: Decimal | None, places: int = 2) -> str:
    """``$1,234.57`` for people; a sub-cent amount keeps 3 significant digits (``$0.00897``)
    rather than reading as $0.00, and below a millionth it is written ``$4.68E-7``."""
    if value is None:
        return "$0"
    v = Decimal(value)
    sign, a = ("-" if v < 0 else ""), v.copy_abs()  # abs() rounds to 28 digits
    if a != 0 and a < _CENT:
        if a < _MILLIONTH:
            return f"{sign}${a:.2E}"  # Decimal writes E-7, not E-07
        exp = a.adjusted() - 2  # keep three significant digits
        return f"{sign}${a.quantize(Decimal(1).scaleb(exp)).normalize():f}"
    # In the money context: at 28 digits, quantizing an amount past 1e26 to cents raises.
    q = a.quantize(Decimal(1).scaleb(-places), context=MONEY_CONTEXT)
    if q == 0:
        sign = ""
    return f"{sign}${q:,}"


def usd_past(spend: Decimal, threshold: Decimal) -> str:
    """A spend that reached ``threshold``, as ``usd`` writes it, unless that misleads: when
    the amount shown does not read as past the threshold ($0.0125 past a $0.01 budget read
    ``$0.01``), or is off by more than a thousandth of it ($0.0125 at the 50% level of a
    $0.01 budget read ``$0.01 of its $0.01``). Then exactly (``exact_usd``)."""
    shown = usd(spend)
    value = usd_value(shown)
    if value == spend or (value > threshold and abs(value - spend) * 1000 <= threshold):
        return shown
    return exact_usd(spend)


def usd_value(shown: str) -> Decimal:
    """The amount a ``usd`` text reads as (``-$1,234.57``: -1234.57), to tell whether it
    shows an amount exactly."""
    return Decimal(shown.replace("$", "").replace(",", ""))


def exact_usd(value: Decimal) -> str:
    """An amount exactly, for amounts compared with one another (what a budget has left and
    what a call needs, old and new totals): ``$0.001735``, ``-$0.0001``, ``$0``. Never
    rounded; DECIMAL(38,18)'s trailing zeros go (``$0.001735000000000000``, ``$0E-18``)."""
    sign = "-" if value < 0 else ""
    # copy_abs and the money context: abs() and normalize() round to 28 digits.
    return f"{sign}${value.copy_abs().normalize(MONEY_CONTEXT):f}"


def written_usd(amount: Decimal) -> str:
    """An amount someone wrote (a budget, a level of one) as money is written: 40.0 and 100
    read ``$40.00`` and ``$100.00`` beside a spend's cents, but one finer than a cent keeps its
    digits (``$0.005``, 50% of $0.05 ``$0.025``), which cents would round away."""
    exact = amount.normalize(MONEY_CONTEXT)
    exponent = exact.as_tuple().exponent
    if isinstance(exponent, int) and exponent >= -2:
        return f"${amount.quantize(_CENT, context=MONEY_CONTEXT):,f}"
    return f"${exact:,f}"


def plural(n: int, noun: str) -> str:
    """``1 call``, ``2 calls``, ``1,234 calls``."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"
