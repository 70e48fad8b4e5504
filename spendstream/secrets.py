"""Secrets come from an environment variable or a file named in config, never from the TOML.

They are held as ``pydantic.SecretStr`` (``repr`` shows ``'**********'``) and only
unwrapped at the moment a request or a client is built.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import SecretStr

from spendstream.errors import ConfigError

__all__ = ["SecretStr", "load_optional_secret", "load_secret"]


def load_secret(
    key: str,
    env_name: str | None,
    file_path: str | None,
    environ: Mapping[str, str] | None = None,
) -> SecretStr:
    """Read the secret for config key ``key`` (e.g. ``alerts.sink.pd.routing_key``).

    A file wins over the environment (a mounted secret is the more deliberate choice);
    a missing or empty secret is a ConfigError naming the key, never its value.
    """
    env = os.environ if environ is None else environ
    if file_path:
        p = Path(file_path).expanduser()
        try:
            value = p.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{key}_file: cannot read {p}: {exc.strerror}") from None
        if not value:
            raise ConfigError(f"{key}_file: {p} is empty")
        return SecretStr(value)
    if env_name:
        value = env.get(env_name, "").strip()
        if not value:
            raise ConfigError(f"{key}_env: environment variable {env_name} is not set or empty")
        return SecretStr(value)
    raise ConfigError(f"{key}: set {key}_env or {key}_file")


def load_optional_secret(
    key: str,
    env_name: str | None,
    file_path: str | None,
    environ: Mapping[str, str] | None = None,
) -> SecretStr | None:
    """Like ``load_secret``, but None when neither ``<key>_env`` nor ``<key>_file`` is set.

    Once one is set, the secret must be there: a named source that is missing or empty is
    a ConfigError, so a typo never silently switches a protection off.
    """
    if not env_name and not file_path:
        return None
    return load_secret(key, env_name, file_path, environ)
