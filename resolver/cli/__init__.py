"""The `resolver` command. Each subcommand lives in its own module and is registered here."""

from __future__ import annotations

import click

from .attach import attach
from .basic import keygen, links
from .demo import demo
from .revoke import revoke


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """flex-media-resolver: secure Flex Insights media links."""


main.add_command(keygen)
main.add_command(links)
main.add_command(attach)
main.add_command(demo)
main.add_command(revoke)
