"""`resolver keygen` and `resolver links`."""

from __future__ import annotations

import json
import secrets

import click

from ..access.links import MediaSpec, check_task_sid, issue_entries
from ..access.signing import Signer
from ..errors import ResolverError
from .common import load_settings, open_audit, operator


@click.command()
def keygen() -> None:
    """Print a new signing key (append it to RESOLVER_SECRET_KEYS to rotate)."""
    click.echo(secrets.token_urlsafe(48))


@click.command()
@click.option("--task", "task_sid", required=True, help="TaskRouter task SID (WT...)")
@click.option("--source", "sources", multiple=True, required=True, help="source name from RESOLVER_SOURCES")
@click.option("--key", "keys", multiple=True, required=True, help="media key within the source")
@click.option("--type", "types", multiple=True, help="VoiceRecording, Raw or Referenced")
@click.option("--title", "titles", multiple=True, help="title shown in Insights")
def links(task_sid: str, sources: tuple[str, ...], keys: tuple[str, ...], types: tuple[str, ...],
          titles: tuple[str, ...]) -> None:
    """Print media entries (JSON) ready for a task's conversations.media."""
    if len(sources) != len(keys):
        raise click.UsageError("give one --key for each --source")
    settings = load_settings()
    specs = [MediaSpec(type=types[i] if i < len(types) else "VoiceRecording", source=source, key=keys[i],
                       title=titles[i] if i < len(titles) else "")
             for i, source in enumerate(sources)]
    audit = open_audit(settings)
    try:
        check_task_sid(task_sid)
        entries = issue_entries(specs, task_sid=task_sid, sources=settings.sources,
                                signer=Signer(settings.secret_keys), public_url=settings.public_url, audit=audit,
                                **operator())
    except ResolverError as e:
        raise click.ClickException(e.message) from e
    finally:
        audit.close()
    click.echo(json.dumps({"media": entries}, indent=2))
