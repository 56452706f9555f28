"""What every subcommand needs: settings from the environment, with a one-line failure."""

from __future__ import annotations

import getpass
import sys

import click

from .. import config, redact
from ..audit.log import AuditLog
from ..errors import ConfigError


def load_settings() -> config.Settings:
    try:
        return config.from_env()
    except ConfigError as e:
        raise click.ClickException(str(e)) from e


def open_audit(settings: config.Settings) -> AuditLog:
    """The audit log the server writes to (RESOLVER_AUDIT_LOG). With `-`, a command's records go to stderr,
    so what it prints on stdout (JSON for scripts) stays parseable."""
    return AuditLog.open(settings.audit_log, secrets=redact.known_secrets(settings), dash=sys.stderr)


def operator() -> dict[str, str]:
    """Who ran the command, for its audit records (containers may have no user name)."""
    try:
        name = getpass.getuser()
    except (OSError, KeyError):
        name = "unknown"
    return {"via": "cli", "operator": name}
