"""``prices show``'s "did you mean": the part of (provider, model) the catalog does not know."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from spendstream.config import config_from_dict
from spendstream.errors import ConfigError
from spendstream.pricebook import did_you_mean, rate_card_for, show_rates

AT = datetime(2026, 11, 1, tzinfo=UTC)


def _error(provider: str, model: str) -> str:
    with pytest.raises(ConfigError) as caught:
        show_rates(None, config_from_dict({}), provider, model, AT)
    return str(caught.value)


@pytest.mark.parametrize("provider", ["opnai", "Opnai", "anthropc"])
def test_a_mistyped_provider_is_named_not_the_model(provider: str) -> None:
    # The model was right: suggesting it (as before: "did you mean gpt-5-mini?") left the
    # user to find the typo in the provider themselves.
    meant = "anthropic" if provider == "anthropc" else "openai"
    assert f"; did you mean provider {meant}? (" in _error(provider, "gpt-5-mini")


def test_an_unknown_provider_far_from_any_is_told_who_lists_the_model() -> None:
    assert "; did you mean openai/gpt-5-mini? (" in _error("my-gateway", "gpt-5-mini")


def test_a_known_provider_with_a_mistyped_model_is_told_the_model() -> None:
    assert "; did you mean gpt-5-mini? (" in _error("openai", "gpt5-mini")


def test_nothing_is_suggested_when_nothing_is_near_or_both_are_known() -> None:
    assert "did you mean" not in _error("zzz", "qqq-9")
    card = rate_card_for(None, config_from_dict({}).prices)
    assert did_you_mean(card, "openai", "gpt-5-mini") == ""


def test_a_provider_only_the_configuration_knows_is_a_known_provider() -> None:
    config = config_from_dict(
        {
            "prices": {
                "model": [
                    {
                        "provider": "acme",
                        "model": "big-1",
                        "input_per_mtok": 1,
                        "output_per_mtok": 2,
                    }
                ]
            }
        }
    )
    card = rate_card_for(None, config.prices)
    assert did_you_mean(card, "acme", "big1") == "; did you mean big-1?"
    assert did_you_mean(card, "acmee", "big-1") == "; did you mean provider acme?"
