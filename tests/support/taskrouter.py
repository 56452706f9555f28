"""Set-up for the attach, tasks API and hook tests: a fake TaskRouter on 127.0.0.1 and settings for it.

The fixtures are prefixed `tr_` and re-exported by conftest.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from resolver import config
from resolver.demo.fake_taskrouter import FakeTaskRouter
from resolver.demo.server import ServerThread

ACCOUNT = "AC" + "a" * 32
AUTH_TOKEN = "tok_" + "b" * 28
PUBLIC_URL = "https://media.example.com"
SECRET = "k" * 40

SOURCES_TOML = """
[sources.recordings]
kind = "twilio-recording"

[sources.transcripts]
kind = "http"
base_url = "https://storage.example.com/transcripts/"

[sources.crm]
kind = "redirect"
base_url = "https://crm.example.com/tickets/"
"""


def sid(prefix: str, n: int) -> str:
    return f"{prefix}{n:032x}"


WS = sid("WS", 1)
WT = sid("WT", 1)


def settle(client_or_app, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    """Wait for the TaskRouter hook's background attaches (they run after the hook answered)."""
    app = getattr(client_or_app, "application", client_or_app)
    assert app.extensions["resolver"].hooks.wait(timeout), "hook attaches still running"


def env_for(url: str, tmp_path: Path, sources: str = SOURCES_TOML, **extra: str) -> dict[str, str]:
    path = tmp_path / "sources.toml"
    path.write_text(sources)
    return {
        "RESOLVER_SECRET_KEYS": SECRET,
        "RESOLVER_PUBLIC_URL": PUBLIC_URL,
        "RESOLVER_SOURCES": str(path),
        "TWILIO_ACCOUNT_SID": ACCOUNT,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_API_URL": url,
        "TWILIO_TASKROUTER_URL": url,
        "RESOLVER_STORE": f"sqlite:///{tmp_path / 'store.db'}",
        **extra,
    }


@pytest.fixture
def tr_fake() -> FakeTaskRouter:
    return FakeTaskRouter(account_sid=ACCOUNT, credentials={(ACCOUNT, AUTH_TOKEN)})


class Switch:
    """One WSGI server for the whole session whose app each test swaps (a server stop costs 0.5 s)."""

    def __init__(self) -> None:
        self.app: Callable | None = None

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if self.app is None:
            raise RuntimeError("no fake TaskRouter is installed")
        return self.app(environ, start_response)


@pytest.fixture(scope="session")
def tr_switched_server() -> Iterator[tuple[Switch, ServerThread]]:
    switch = Switch()
    with ServerThread(switch) as server:
        yield switch, server


@pytest.fixture
def tr_server(tr_fake: FakeTaskRouter, tr_switched_server: tuple[Switch, ServerThread]) -> Iterator[ServerThread]:
    switch, server = tr_switched_server
    switch.app = tr_fake.app()
    yield server
    switch.app = None


@pytest.fixture
def tr_settings(tr_server: ServerThread, tmp_path: Path) -> config.Settings:
    return config.from_env(env_for(tr_server.url, tmp_path))
