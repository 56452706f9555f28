"""`resolver revoke`: refuse a link, a task's media, a user, or every grant issued before a time."""

from __future__ import annotations

import click

from ..access import revocation
from ..access.signing import Signer
from ..errors import ResolverError
from ..store import StoreError, open_store
from .common import load_settings, open_audit, operator


@click.command()
@click.option("--link", help="a /d/ or /p/ URL issued by this resolver")
@click.option("--task", "task_sid", help="a TaskRouter task SID (WT...): all of its media")
@click.option("--subject", help="a Flex user (IAM's escaped identity or its realm_user_id): everything, for them")
@click.option("--all-before", "all_before", metavar="TIME",
              help="every grant issued before TIME (ISO 8601 with a zone, or 'now')")
def revoke(link: str | None, task_sid: str | None, subject: str | None, all_before: str | None) -> None:
    """Revoke access before it expires, on every instance sharing RESOLVER_STORE (permanent)."""
    given = {"link": link, "task_sid": task_sid, "subject": subject, "all_before": all_before}
    if sum(v is not None for v in given.values()) != 1:
        raise click.UsageError("give exactly one of --link, --task, --subject or --all-before")
    settings = load_settings()
    try:
        store = open_store(settings.store_url)  # the server's store and audit log, without building an app
    except StoreError as e:
        raise click.ClickException(f"nothing was revoked: {e.detail} (check RESOLVER_STORE)") from e
    audit = open_audit(settings)
    try:
        rev = revocation.parse({k: v for k, v in given.items() if v is not None}, Signer(settings.secret_keys))
        revocation.apply(rev, store, audit, **operator())
    except StoreError as e:
        raise click.ClickException(f"nothing was revoked: {e.detail} (check RESOLVER_STORE)") from e
    except ResolverError as e:
        raise click.ClickException(e.message) from e
    finally:
        audit.close()
        store.close()
    d = rev.describe()
    click.echo(f"revoked {d['kind']} {d['value']} at {d['at']}")
