"""``whatif --route`` to a name nothing prices says which known name is nearest, as
``prices show`` does (spendstream.pricebook.did_you_mean)."""

from __future__ import annotations

from pathlib import Path

import pytest

from spendstream.cli import main
from spendstream.errors import ConfigError
from spendstream.stream.pricing import Pricer
from spendstream.warehouse import Warehouse
from spendstream.warehouse.whatif import Route, Selector, WhatIf


def _refused(provider: str, model: str) -> str:
    with pytest.raises(ConfigError) as caught:
        WhatIf(Pricer.from_config(), [Route(Selector(), provider, model)])
    return str(caught.value)


def test_a_route_to_a_mistyped_model_suggests_the_model() -> None:
    # Before: "--route: nothing prices openai/gpt5-mini (...)" and nothing more.
    assert _refused("openai", "gpt5-mini").endswith(
        "nothing prices openai/gpt5-mini (not in genai-prices, no [[prices.model]] entry); "
        "did you mean gpt-5-mini?"
    )


def test_a_route_to_a_mistyped_provider_suggests_the_provider() -> None:
    assert _refused("opnai", "gpt-5-mini").endswith("; did you mean provider openai?")


def test_a_route_to_nothing_near_suggests_nothing() -> None:
    assert _refused("zzz", "qqq-9").endswith("(not in genai-prices, no [[prices.model]] entry)")


def test_the_command_says_it(
    wh: Warehouse, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["whatif", "--workdir", str(workdir), "--route", "all=openai/gpt5-mini"]) == 2
    assert capsys.readouterr().err.rstrip().endswith("did you mean gpt-5-mini?")
