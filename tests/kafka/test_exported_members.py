"""The adapter's public names are exactly what __all__ says, and each resolves."""

from __future__ import annotations

import subprocess
import sys

import spendstream.kafka as kafka


def test_every_exported_name_resolves() -> None:
    for name in kafka.__all__:
        assert getattr(kafka, name) is not None, name


def test_importing_the_package_does_not_load_the_client_library() -> None:
    code = "import sys, spendstream.kafka; print('confluent_kafka' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
