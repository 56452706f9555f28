"""`resolver demo`: the whole flow on one machine, no Twilio account needed.

Starts, all on 127.0.0.1 and in this process: a fake Twilio (IAM token validation and recordings, one of them
encrypted with a throwaway key pair made at start-up, as Voice Recording Encryption would), a fake
private media store (transcripts behind a bearer token), the real resolver app with a throwaway signing key,
and a page that mimics a Flex Insights conversation list whose clicks go through the real
`/static/flex-drilldown.js`. Nothing here is imported by the service: only the `demo` command and the
tests load this module.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask

from .. import config
from ..access.links import MediaSpec, build_entry
from ..access.signing import Signer
from ..app import create_app
from .fake_twilio import FakeTwilio, FlexUser
from .server import ServerThread
from .site import site_app
from .storage import storage_app

HOST = "127.0.0.1"
MEDIA = resources.files(__package__) / "media"
RECORDING_SID = "RE" + "d3" * 16
ENCRYPTED_SID = "RE" + "e7" * 16  # the same call, held by the fake Twilio encrypted (Voice Recording Encryption)
TRANSCRIPT_KEY = "2026/01/sample-transcript.json"
TICKET_KEY = "4711"


class _LateApp:
    """A WSGI app set after its server is bound, because the resolver's settings need its port."""

    app: Callable | None = None

    def __call__(self, environ: dict, start_response: Callable) -> object:
        assert self.app is not None  # noqa: S101 - set before the server thread starts
        return self.app(environ, start_response)


@dataclass
class Demo:
    resolver_url: str
    page_url: str
    twilio_url: str
    storage_url: str
    tokens: dict[str, str]  # "allowed" / "denied" -> a Flex token the fake Twilio accepts
    links: dict[str, str]  # "audio" / "transcript" / "redirect" -> a drilldown link
    twilio: FakeTwilio
    env: dict[str, str]  # the resolver's environment, for tests that start a variant
    resolver: Flask
    _servers: list[ServerThread] = field(default_factory=list)
    _tmp: str = ""

    def stop(self) -> None:
        for server in reversed(self._servers):
            server.stop()
        self.resolver.extensions["resolver"].close()
        shutil.rmtree(self._tmp, ignore_errors=True)


def _sources_toml(storage_url: str, crm_url: str, key_sid: str) -> str:
    return f"""
[sources.recordings]
kind = "twilio-recording"
format = "wav"
private_keys = {{ {key_sid} = "DEMO_RECORDING_KEY" }}

[sources.transcripts]
kind = "http"
base_url = "{storage_url}/transcripts/"
auth = {{ type = "bearer", token_env = "DEMO_STORAGE_TOKEN" }}
content_types = ["application/json", "text/plain"]

[sources.crm]
kind = "redirect"
base_url = "{crm_url}/crm/tickets/"
"""


def _entry(entries: dict[str, dict], name: str, label: str) -> dict:
    """An entry exactly as it sits in `conversations.media`, plus the label the demo's button shows."""
    return {**entries[name], "label": label}


def _conversations(entries: dict[str, dict], task_sid: str, site_url: str) -> list[dict]:
    """Rows of the Conversations screen, each with its task's media list in the order Flex reads it.

    The page (demo.js) decides what to show from each entry's `type` and position, as Flex 2.17 does:
    `VoiceRecording` plays in the Insights player through `url_provider`, `Referenced` opens with
    `window.open(url)`, and `Raw` is drilled to (the `HistoricalReportingView` action) only when it is first
    in the list; a `Raw` entry anywhere else gets no panel.
    """
    kb = {"type": "Referenced", "url": f"{site_url}/kb/kb-12", "title": "Knowledge base article kb-12",
          "label": "Knowledge base (not a resolver link)"}
    return [
        # As our attach writes it: the recording first, Raw never first (so Flex shows it no panel).
        {"date": "2026-01-14 10:02", "agent": "Sam Supervisor", "customer": "+1 415 555 0100", "queue": "Cards",
         "talk": "0:08", "task": task_sid, "media": [
             _entry(entries, "audio", "▶ Recording"),
             _entry(entries, "transcript", "Transcript (Raw, second)"),
             _entry(entries, "referenced_audio", "↗ Recording (Referenced)"),
             _entry(entries, "redirect", "↗ CRM ticket (Referenced)"),
         ]},
        # One VoiceRecording per task (Twilio: "only the first VoiceRecording is visible").
        {"date": "2026-01-14 09:58", "agent": "Sam Supervisor", "customer": "+1 415 555 0100", "queue": "Cards",
         "talk": "0:08", "task": task_sid, "media": [
             _entry(entries, "audio_encrypted", "▶ Encrypted recording"),
         ]},
        # A list a back-end job wrote with Raw first (POST /api/v1/links keeps the order given; our attach
        # never does this): Flex drills to it instead of opening the Conversation Screen.
        {"date": "2026-01-14 09:50", "agent": "Sam Supervisor", "customer": "+1 415 555 0142", "queue": "Cards",
         "talk": "1:05", "task": task_sid, "media": [
             _entry(entries, "transcript", "Transcript"),
         ]},
        {"date": "2026-01-14 09:41", "agent": "Alex Agent", "customer": "+1 415 555 0199", "queue": "Loans",
         "talk": "3:12", "task": "", "media": [kb]},
    ]


def start_demo(*, port: int = 0, page_port: int = 0, grant_ttl: int = 60, audit_log: str = "-") -> Demo:
    """Start every part on 127.0.0.1 and return where they listen; call `stop()` when done."""
    tmp = tempfile.mkdtemp(prefix="resolver-demo-")
    servers: list[ServerThread] = []
    account_sid = "AC" + secrets.token_hex(16)
    twilio = FakeTwilio(account_sid=account_sid, auth_token=secrets.token_hex(16))
    twilio.recordings[RECORDING_SID] = ((MEDIA / "sample-call.wav").read_bytes(), "audio/x-wav")
    # A throwaway key pair, made now: Twilio would hold the public key, the resolver the private one.
    recording_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_sid = "CR" + secrets.token_hex(16)
    twilio.add_encrypted(ENCRYPTED_SID, (MEDIA / "sample-call.wav").read_bytes(), recording_key.public_key(), key_sid)
    tokens = {"allowed": secrets.token_urlsafe(24), "allowed_2": secrets.token_urlsafe(24),
              "denied": secrets.token_urlsafe(24)}
    twilio.tokens[tokens["allowed"]] = FlexUser(realm_user_id="sam.supervisor@owlbank.example", roles=["supervisor"])
    twilio.tokens[tokens["allowed_2"]] = FlexUser(realm_user_id="sam.supervisor@owlbank.example", roles=["supervisor"])
    twilio.tokens[tokens["denied"]] = FlexUser(realm_user_id="alex.agent@owlbank.example", roles=["agent"],
                                               worker_sid="WK" + "a1" * 16)
    storage_token = secrets.token_urlsafe(24)
    storage = storage_app(
        {f"transcripts/{TRANSCRIPT_KEY}": ((MEDIA / "sample-transcript.json").read_bytes(), "application/json")},
        storage_token,
    )
    late_site, late_resolver = _LateApp(), _LateApp()
    try:
        for server in (ServerThread(twilio.app()), ServerThread(storage),
                       ServerThread(late_site, port=page_port), ServerThread(late_resolver, port=port)):
            servers.append(server)
        twilio_srv, storage_srv, site_srv, resolver_srv = servers
        env = {
            "RESOLVER_SECRET_KEYS": secrets.token_urlsafe(48),  # throwaway: links die with the demo
            "RESOLVER_PUBLIC_URL": resolver_srv.url,
            "RESOLVER_SOURCES": str(Path(tmp) / "sources.toml"),
            "RESOLVER_CORS_ORIGINS": site_srv.url,
            "RESOLVER_GRANT_TTL": str(grant_ttl),
            "RESOLVER_STORE": f"sqlite:///{Path(tmp) / 'demo.db'}",
            "RESOLVER_AUDIT_LOG": audit_log,
            "TWILIO_ACCOUNT_SID": account_sid,
            "TWILIO_AUTH_TOKEN": twilio.auth_token,
            "TWILIO_IAM_URL": twilio_srv.url,
            "TWILIO_API_URL": twilio_srv.url,
            "TWILIO_TASKROUTER_URL": twilio_srv.url,
            "DEMO_STORAGE_TOKEN": storage_token,
            "DEMO_RECORDING_KEY": recording_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode(),
        }
        Path(env["RESOLVER_SOURCES"]).write_text(_sources_toml(storage_srv.url, site_srv.url, key_sid))
        settings = config.from_env(env, instance_path=tmp)
        resolver = create_app(settings)
        late_resolver.app = resolver
        task_sid = "WT" + secrets.token_hex(16)
        specs = {
            "audio": MediaSpec(type="VoiceRecording", source="recordings", key=RECORDING_SID, title="Call recording"),
            "audio_encrypted": MediaSpec(type="VoiceRecording", source="recordings", key=ENCRYPTED_SID,
                                         title="Call recording (encrypted at Twilio)"),
            "transcript": MediaSpec(type="Raw", source="transcripts", key=TRANSCRIPT_KEY, title="Call transcript"),
            "redirect": MediaSpec(type="Referenced", source="crm", key=TICKET_KEY, title="CRM ticket 4711"),
            "referenced_audio": MediaSpec(type="Referenced", source="recordings", key=RECORDING_SID,
                                          title="Call recording (Referenced)"),
        }
        signer = Signer(settings.secret_keys)
        entries = {
            name: build_entry(spec, task_sid=task_sid, sources=settings.sources, signer=signer,
                              public_url=settings.public_url)
            for name, spec in specs.items()
        }
        users = [
            {"name": "Sam Supervisor", "role": "supervisor", "token": tokens["allowed"]},
            {"name": "Alex Agent", "role": "agent", "token": tokens["denied"]},
        ]
        late_site.app = site_app(
            resolver_url=resolver_srv.url,
            users=users,
            conversations=_conversations(entries, task_sid, site_srv.url),
            direct_link=entries["audio"]["url"],
        )
        for server in servers:
            server.start()
    except BaseException:
        for server in servers:
            server.server.server_close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Demo(
        resolver_url=resolver_srv.url,
        page_url=site_srv.url + "/",
        twilio_url=twilio_srv.url,
        storage_url=storage_srv.url,
        tokens=tokens,
        links={name: entry["url"] for name, entry in entries.items()},
        twilio=twilio,
        env=env,
        resolver=resolver,
        _servers=servers,
        _tmp=tmp,
    )
