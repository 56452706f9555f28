"""`resolver keygen` and `resolver links`."""

from __future__ import annotations

import json
import os
import secrets

import click
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ..access.links import MediaSpec, check_task_sid, issue_entries
from ..access.signing import Signer
from ..errors import ResolverError
from .common import load_settings, open_audit, operator


@click.command()
@click.option("--recording-key", is_flag=True,
              help="make an RSA key pair for Twilio Voice Recording Encryption instead of a signing key")
@click.option("--out", default="recording-key.pem", show_default=True, type=click.Path(dir_okay=False),
              help="with --recording-key: where the private key (PKCS#8 PEM) is written, mode 600, never overwritten")
@click.option("--bits", default="2048", show_default=True, type=click.Choice(["2048", "3072", "4096"]),
              help="with --recording-key: RSA modulus size")
def keygen(recording_key: bool, out: str, bits: str) -> None:
    """Print a new signing key (append it to RESOLVER_SECRET_KEYS to rotate), or with --recording-key write a
    recording-encryption key pair and print the public key to paste into Twilio."""
    if not recording_key:
        click.echo(secrets.token_urlsafe(48))
        return
    key = rsa.generate_private_key(public_exponent=65537, key_size=int(bits))
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise click.ClickException(f"{out} exists; it is not overwritten (choose another --out)") from None
    except OSError as e:
        raise click.ClickException(f"cannot write {out}: {e.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    click.echo(public, nl=False)
    click.echo(
        f"Private key ({bits}-bit RSA) written to {out} (mode 600). Next:\n"
        "  1. Paste the public key above into Twilio as a Public Key resource (Console: Voice Recording\n"
        "     Encryption / Credentials > Public keys); note its SID (CR...).\n"
        "  2. Put the contents of the private key file in an environment variable of the resolver, e.g.\n"
        "     RECORDING_KEY_2026, and add  private_keys = { CR... = \"RECORDING_KEY_2026\" }  to the\n"
        "     twilio-recording source (format = \"wav\"). Keep older keys listed while their recordings matter.\n"
        "  3. Run `resolver check`, then turn on encryption with the new key in Twilio.",
        err=True,
    )


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
