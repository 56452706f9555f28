"""`resolver revoke`: refuse a link, a task's media, a user, or every grant issued before a time."""

from __future__ import annotations

import click

from .. import create_app
from ..access import revocation
from ..errors import ConfigError, ResolverError
from ..store import StoreError
from .common import operator


@click.command()
@click.option("--link", help="a /d/ or /p/ URL issued by this resolver")
@click.option("--task", "task_sid", help="a TaskRouter task SID (WT...): all of its media")
@click.option("--subject", help="a Flex identity: everything, for that user")
@click.option("--all-before", "all_before", metavar="TIME",
              help="every grant issued before TIME (ISO 8601 with a zone, or 'now')")
def revoke(link: str | None, task_sid: str | None, subject: str | None, all_before: str | None) -> None:
    """Revoke access before it expires, on every instance sharing RESOLVER_STORE (permanent)."""
    given = {"link": link, "task_sid": task_sid, "subject": subject, "all_before": all_before}
    if sum(v is not None for v in given.values()) != 1:
        raise click.UsageError("give exactly one of --link, --task, --subject or --all-before")
    try:
        app = create_app()  # the same wiring as the server: its store and its audit log
    except ConfigError as e:
        raise click.ClickException(str(e)) from e
    try:
        with app.app_context():
            c = app.extensions["resolver"]
            rev = revocation.parse({k: v for k, v in given.items() if v is not None}, c.signer)
            revocation.apply(rev, **operator())
    except StoreError as e:
        raise click.ClickException(f"nothing was revoked: {e.detail} (check RESOLVER_STORE)") from e
    except ResolverError as e:
        raise click.ClickException(e.message) from e
    finally:
        app.extensions["resolver"].close()
    d = rev.describe()
    click.echo(f"revoked {d['kind']} {d['value']} at {d['at']}")
