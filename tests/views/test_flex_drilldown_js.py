"""Run the drilldown handler's node tests (tests/js/) against a real resolver with a fake Twilio.

The resolver, fake Twilio and fake media store are the demo's (resolver/demo/run.py); a second resolver
whose Twilio IAM is unreachable covers the 503 case. Skipped only when `node` is not installed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from resolver import config
from resolver.access.links import MediaSpec, build_entry
from resolver.access.signing import Signer
from resolver.app import create_app
from resolver.demo.run import RECORDING_SID, Demo, start_demo
from resolver.demo.server import ServerThread

ROOT = Path(__file__).resolve().parents[2]
NODE = shutil.which("node")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    running = start_demo(audit_log=str(tmp_path_factory.mktemp("audit") / "audit.log"))
    yield running
    running.stop()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def twilio_down(demo: Demo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A resolver like the demo's whose Twilio IAM refuses connections: (its URL, a drilldown link)."""
    tmp = tmp_path_factory.mktemp("twilio-down")
    holder: dict = {}
    server = ServerThread(lambda environ, start: holder["app"](environ, start))
    env = dict(demo.env, RESOLVER_PUBLIC_URL=server.url, TWILIO_IAM_URL=f"http://127.0.0.1:{_closed_port()}",
               RESOLVER_STORE=f"sqlite:///{tmp / 'store.db'}", RESOLVER_AUDIT_LOG=str(tmp / "audit.log"))
    settings = config.from_env(env, instance_path=str(tmp))
    holder["app"] = app = create_app(settings)
    entry = build_entry(MediaSpec(type="VoiceRecording", source="recordings", key=RECORDING_SID),
                        task_sid="WT" + "0" * 32, sources=settings.sources, signer=Signer(settings.secret_keys),
                        public_url=settings.public_url)
    with server:
        yield server.url, entry["url"]
    app.extensions["resolver"].close()


def test_drilldown_handler_against_the_resolver(demo: Demo, twilio_down: tuple[str, str]) -> None:
    if NODE is None:
        pytest.skip("node is not installed; the handler's tests need node's built-in test runner")
    env = dict(
        os.environ,
        RESOLVER_URL=demo.resolver_url,
        FLEX_TOKEN_ALLOWED=demo.tokens["allowed"],
        FLEX_TOKEN_ALLOWED_2=demo.tokens["allowed_2"],
        FLEX_TOKEN_DENIED=demo.tokens["denied"],
        DRILLDOWN_AUDIO=demo.links["audio"],
        DRILLDOWN_TRANSCRIPT=demo.links["transcript"],
        DRILLDOWN_REDIRECT=demo.links["redirect"],
        TWILIO_DOWN_RESOLVER_URL=twilio_down[0],
        TWILIO_DOWN_DRILLDOWN=twilio_down[1],
    )
    run = subprocess.run(
        [NODE, "--test", "--test-reporter=spec", "tests/js/"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    report = run.stdout + run.stderr
    assert run.returncode == 0, report
    assert "skipped 0" in report, report  # every live test ran: the variables reached node
    assert "fail 0" in report, report
    # The refused resolves reached Twilio: the denial came from the real check, not from the handler.
    assert demo.tokens["denied"] in demo.twilio.validations
