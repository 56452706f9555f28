"""`resolver demo`: run the whole flow locally (see resolver/demo/run.py)."""

from __future__ import annotations

import threading

import click


@click.command()
@click.option("--port", default=8000, show_default=True, help="resolver port on 127.0.0.1 (0: any free port)")
@click.option("--page-port", default=8001, show_default=True, help="demo Flex page port on 127.0.0.1")
@click.option("--grant-ttl", default=60, show_default=True, help="grant lifetime in seconds")
def demo(port: int, page_port: int, grant_ttl: int) -> None:
    """Run the resolver with stand-ins for Twilio and a media store, on 127.0.0.1 only, with a throwaway key."""
    from ..demo.run import start_demo  # imported here: nothing of the demo loads with the service

    try:
        running = start_demo(port=port, page_port=page_port, grant_ttl=grant_ttl)
    except OSError as e:
        raise click.ClickException(f"could not start the demo: {e.strerror or e}") from e
    click.echo("flex-media-resolver demo: every part listens on 127.0.0.1 only; the signing key is throwaway.")
    click.echo(f"  Open this page (mimics Flex Insights): {running.page_url}")
    click.echo(f"  Resolver:                              {running.resolver_url}")
    click.echo(f"  Fake Twilio (IAM, recordings):         {running.twilio_url}")
    click.echo(f"  Fake media store (transcripts):        {running.storage_url}")
    click.echo("Audit records follow below. Press Ctrl+C to stop.")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        click.echo("stopping")
    finally:
        running.stop()
