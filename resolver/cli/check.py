"""`resolver check`: is this deployment ready? Configuration, store, audit log, Twilio, each source."""

from __future__ import annotations

import click

from .. import config
from ..errors import ConfigError
from ..ops import checks


def _line(result: checks.Result) -> str:
    colour = {checks.OK: "green", checks.WARN: "yellow", checks.FAIL: "red"}[result.level]
    text = click.style(f"{result.level:<5}", fg=colour) + f" {result.name:<22} {result.detail}"
    if result.fix:
        text += "\n" + " " * 29 + "fix: " + result.fix
    return text


@click.command()
@click.option("--timeout", default=5.0, show_default=True, help="seconds to wait for each remote answer")
def check(timeout: float) -> None:
    """Validate configuration and reach Twilio and every source; exit 1 when something must be fixed."""
    try:
        settings = config.from_env()  # the app's own instance folder: the default SQLite store is the one checked
    except ConfigError as e:
        click.echo(_line(checks.Result(checks.FAIL, "configuration", str(e),
                                       "set it in the environment (see the README, Configuration)")))
        raise SystemExit(1) from e
    click.echo(_line(checks.Result(
        checks.OK, "configuration",
        f"{len(settings.secret_keys)} signing key(s), {len(settings.sources)} source(s), "
        f"roles {','.join(sorted(settings.allowed_roles))}")))
    failures = warnings = 0
    for result in checks.run_checks(settings, timeout=timeout):
        click.echo(_line(result))
        failures += result.level == checks.FAIL
        warnings += result.level == checks.WARN
    if failures:
        click.echo(f"{failures} problem(s) to fix, {warnings} warning(s).")
        raise SystemExit(1)
    click.echo(f"ready: no problems, {warnings} warning(s).")
