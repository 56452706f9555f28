"""`resolver audit verify` and `resolver audit query`: the reviewer's view of the audit trail."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import click

from ..audit import trail

RELATIVE = re.compile(r"(\d+)([dhm])")
UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def _time(value: str | None, option: str) -> datetime | None:
    """ISO 8601 date or date-time (UTC when no offset is given), or a span back from now: 7d, 12h, 30m."""
    if value is None:
        return None
    match = RELATIVE.fullmatch(value.strip())
    if match:
        return datetime.now(UTC) - timedelta(**{UNITS[match[2]]: int(match[1])})
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as e:
        raise click.BadParameter("use an ISO 8601 date or time (2026-01-31, 2026-01-31T09:00Z) "
                                 "or a span such as 7d, 12h, 30m", param_hint=option) from e
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@click.group()
def audit() -> None:
    """Verify and query the audit trail (RESOLVER_AUDIT_LOG files)."""


@audit.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--require-end", is_flag=True,
              help="also fail on chains without chain_end (use on files of stopped services)")
@click.option("--mixed", is_flag=True,
              help="the files also hold other lines (RESOLVER_AUDIT_LOG=- shares stdout with the access log): "
                   "skip and count them")
def verify(files: tuple[str, ...], require_end: bool, mixed: bool) -> None:
    """Check the hash chains; exit 1 on any deleted, edited, duplicated or reordered record.

    Give rotated files oldest first."""
    report = trail.verify(files, mixed=mixed)
    click.echo(report.text())
    if not report.ok or (require_end and report.open_chains):
        raise SystemExit(1)


@audit.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--subject", help="Flex identity (IAM's escaped identity or its realm_user_id) or worker SID (WK...)")
@click.option("--task", help="TaskRouter task SID (WT...)")
@click.option("--since", help="from this time on (ISO 8601, or 7d / 12h / 30m ago)")
@click.option("--until", help="before this time (ISO 8601, or 7d / 12h / 30m ago)")
@click.option("--event", "events", multiple=True, help="event name, e.g. grant or resolve (repeatable)")
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json", show_default=True)
def query(files: tuple[str, ...], subject: str | None, task: str | None, since: str | None,
          until: str | None, events: tuple[str, ...], fmt: str) -> None:
    """Print the matching records: JSON lines, or CSV for a spreadsheet.

    Example: who opened the recordings of a task last week:
    resolver audit query audit.log --task WT... --event grant --since 7d"""
    records = trail.query(files, subject=subject, task=task, since=_time(since, "--since"),
                          until=_time(until, "--until"), event=events or None)
    if fmt == "csv":
        for row in trail.to_csv(records):
            click.echo(row, nl=False)
    else:
        for rec in records:
            click.echo(json.dumps(rec, separators=(",", ":"), ensure_ascii=True))
