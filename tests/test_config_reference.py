"""docs/configuration.md is generated from the config model: complete, described, current."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from spendstream import config_reference
from spendstream.config import Config, KafkaConfig
from spendstream.config_reference import REFERENCE_PATH, iter_keys, main, render, undocumented


def test_every_key_has_a_description() -> None:
    assert undocumented() == [], "add Field(description=...) in spendstream/config.py"


def test_the_committed_reference_is_the_generated_one() -> None:
    assert REFERENCE_PATH.read_text(encoding="utf-8") == render(), (
        "docs/configuration.md is stale: run python -m spendstream.config_reference"
    )


def test_every_key_appears_in_its_section_with_type_default_and_meaning() -> None:
    text = render()
    for path, _field in iter_keys():
        name = path.rsplit(".", 1)[-1]
        section = path.split("[", 1)[0]
        shown = (f"| `{name}` |", f"`[{section}]`", f"`[[{section}]]`")
        assert any(s in text for s in shown), path
    # Spot checks of what a row says, against the model itself.
    kafka = text.split("## `[kafka]`", 1)[1].split("\n## ", 1)[0]
    line = next(li for li in kafka.splitlines() if li.startswith("| `bootstrap_servers` |"))
    assert '`"localhost:9092"`' in line and "| string |" in line
    assert KafkaConfig.model_fields["bootstrap_servers"].description in line
    budget = text.split("## `[[budget]]`", 1)[1].split("\n## ", 1)[0]
    assert "| `amount_usd` | decimal >= 0, < 1e20 | **required** |" in budget
    assert "| `hard_limit` | decimal >= 0, < 1e20 or unset | unset |" in budget


def test_a_key_without_a_description_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    class Extra(BaseModel):
        """A section someone added."""

        documented: int = Field(default=1, description="Has words.")
        bare: int = 2

    class Tree(Config):
        extra: Extra = Field(default=Extra(), description="A new section.")

    monkeypatch.setattr(config_reference, "Config", Tree)
    assert undocumented() == ["extra.bare"]
    assert main(["--check"]) == 1


def test_check_fails_on_a_stale_file_and_regenerating_fixes_it(tmp_path: Path) -> None:
    target = tmp_path / "configuration.md"
    target.write_text(render().replace("Kafka bootstrap servers", "Kafka servers"))
    assert main(["--check"], target) == 1
    assert main([], target) == 0
    assert main(["--check"], target) == 0
