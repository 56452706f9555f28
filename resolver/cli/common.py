"""What every subcommand needs: settings from the environment, with a one-line failure."""

from __future__ import annotations

import click

from .. import config
from ..errors import ConfigError


def load_settings() -> config.Settings:
    try:
        return config.from_env()
    except ConfigError as e:
        raise click.ClickException(str(e)) from e
