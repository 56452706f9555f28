"""Fixtures: real local servers for Twilio and media stores, and the app built from test settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from resolver import config, create_app
from resolver.demo.fake_twilio import FakeTwilio
from resolver.demo.server import ServerThread
from tests.support.env import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    RECORDING,
    RECORDING_SID,
    REDIS_URL,
    TRANSCRIPT,
    WORKER,
    Gunicorn,
    Storage,
    base_env,
    new_token,
    start_gunicorn,
    stop_gunicorn,
)

pytest_plugins = ["tests.support.hostile", "tests.support.moto_s3", "tests.support.browser"]  # their fixtures


@pytest.fixture(scope="session")
def twilio() -> Iterator[FakeTwilio]:
    fake = FakeTwilio(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)
    fake.recordings[RECORDING_SID] = (RECORDING, "audio/mpeg")
    with ServerThread(fake.app()) as server:
        fake.url = server.url  # type: ignore[attr-defined]
        yield fake


@pytest.fixture(scope="session")
def storage() -> Iterator[Storage]:
    store = Storage()
    store.objects["calls/2026/t1.json"] = (TRANSCRIPT, "application/json")
    store.objects["calls/page.html"] = (b"<script>alert(1)</script>", "text/html")
    with ServerThread(store.app()) as server:
        store.url = server.url  # type: ignore[attr-defined]
        yield store


@pytest.fixture
def token(twilio: FakeTwilio) -> str:
    return new_token(twilio, worker_sid=WORKER)


@pytest.fixture
def env(tmp_path: Path, twilio: FakeTwilio, storage: Storage) -> dict[str, str]:
    return base_env(tmp_path, twilio, storage)


@pytest.fixture
def settings(env: dict[str, str]) -> config.Settings:
    return config.from_env(env)


@pytest.fixture
def app(settings: config.Settings) -> Iterator[Flask]:
    app = create_app(settings)
    app.config["TESTING"] = True
    yield app
    app.extensions["resolver"].close()


@pytest.fixture
def make_client(env: dict[str, str]):  # type: ignore[no-untyped-def]
    """Test clients of apps built from the test settings with some overridden; closed after the test."""
    apps = []

    def build(**overrides: str):  # type: ignore[no-untyped-def]
        app = create_app(config.from_env({**env, **overrides}))
        apps.append(app)
        return app.test_client()

    yield build
    for app in apps:
        app.extensions["resolver"].close()


@pytest.fixture
def client(app: Flask):  # type: ignore[no-untyped-def]
    return app.test_client()


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory: pytest.TempPathFactory, twilio: FakeTwilio, storage: Storage) -> Iterator[Gunicorn]:
    """One server per test module: starting gunicorn costs a second or two."""
    tmp_path = tmp_path_factory.mktemp("gunicorn")
    server = start_gunicorn(base_env(tmp_path, twilio, storage), tmp_path)
    yield server
    stop_gunicorn(server)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The real Redis on 127.0.0.1, its test DB flushed before and after (never DB 0)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    assert client.connection_pool.connection_kwargs.get("db", 0) != 0, "use a test DB, never DB 0"
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs against both real engines."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'store.db'}"
    return request.getfixturevalue("redis_url")


@pytest.fixture
def store(store_url: str):  # type: ignore[no-untyped-def]
    from resolver.store import open_store

    s = open_store(store_url)
    yield s
    s.close()


# The fake TaskRouter (attach, tasks API, event hook): fixtures tr_fake, tr_server, tr_settings.
from tests.support.taskrouter import tr_fake, tr_server, tr_settings, tr_switched_server  # noqa: E402, F401
