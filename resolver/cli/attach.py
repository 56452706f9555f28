"""`resolver attach`: write link entries into a TaskRouter task, keeping everything else in its attributes."""

from __future__ import annotations

import json

import click

from ..access.links import MediaSpec
from ..access.signing import Signer
from ..errors import ResolverError
from ..streaming.upstream import new_session
from ..taskrouter import Attacher, TwilioRest, attach_audited
from .common import load_settings, open_audit, operator


def _specs(sources: tuple[str, ...], keys: tuple[str, ...], types: tuple[str, ...], titles: tuple[str, ...],
           transcripts: tuple[str, ...]) -> list[MediaSpec]:
    if len(sources) != len(keys):
        raise click.UsageError("give one --key for each --source")
    if len(types) > len(sources) or len(titles) > len(sources):
        raise click.UsageError("give at most one --type and one --title for each --source")
    specs = [
        MediaSpec(type=types[i] if i < len(types) else "VoiceRecording", source=source, key=keys[i],
                  title=titles[i] if i < len(titles) else "")
        for i, source in enumerate(sources)
    ]
    return specs + [MediaSpec(type="ChatTranscript", sid=sid) for sid in transcripts]


@click.command()
@click.option("--workspace", "workspace_sid", required=True, help="TaskRouter workspace SID (WS...)")
@click.option("--task", "task_sid", required=True, help="TaskRouter task SID (WT...)")
@click.option("--source", "sources", multiple=True, help="source name from RESOLVER_SOURCES (repeatable)")
@click.option("--key", "keys", multiple=True, help="media key within the source, one per --source")
@click.option("--type", "types", multiple=True, help="VoiceRecording (default), Raw or Referenced")
@click.option("--title", "titles", multiple=True, help="title shown in Insights, per --source")
@click.option("--transcript", "transcripts", multiple=True, help="ChatTranscript for this SID (CH...)")
@click.option("--keep-defaults", is_flag=True,
              help="also list the task's own call recording(s) and chat transcript, which a media list hides")
@click.option("--recording-source", help="twilio-recording or s3 source for --keep-defaults (key: the SID)")
@click.option("--dry-run", is_flag=True, help="print the media list that would be written; write nothing")
def attach(workspace_sid: str, task_sid: str, sources: tuple[str, ...], keys: tuple[str, ...],
           types: tuple[str, ...], titles: tuple[str, ...], transcripts: tuple[str, ...], keep_defaults: bool,
           recording_source: str | None, dry_run: bool) -> None:
    """Merge media entries into a task's conversations.media (conditional write, retried on conflict)."""
    specs = _specs(sources, keys, types, titles, transcripts)
    if not specs and not keep_defaults:
        raise click.UsageError("give at least one --source/--key or --transcript, or --keep-defaults")
    settings = load_settings()
    audit = open_audit(settings)
    with new_session() as http:
        attacher = Attacher(settings, Signer(settings.secret_keys), TwilioRest(settings, http),
                            recording_source=recording_source)
        try:
            result = attach_audited(attacher, audit, workspace_sid, task_sid, specs, who=operator(),
                                    keep_defaults=keep_defaults, dry_run=dry_run)
        except ResolverError as e:
            raise click.ClickException(f"{e.message} ({e.code})") from e
        finally:
            audit.close()
    if dry_run:
        state = "would add" if result.added else "unchanged"
    else:
        state = "added" if result.written else "unchanged"
    click.echo(f"{task_sid}: {state} {len(result.added)} media entries", err=True)
    click.echo(json.dumps({"task_sid": task_sid, "written": result.written, "added": len(result.added),
                           "media": result.media}, indent=2))
