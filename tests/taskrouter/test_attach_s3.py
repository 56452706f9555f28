"""`resolver attach --keep-defaults --recording-source <s3 source>`: recording SIDs linked through a bucket.

The fake TaskRouter lists the call's recording; the link is then resolved and streamed from moto's server
(verifying SigV4), so the whole path from a task to the bytes in the customer's bucket is exercised."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from resolver import config, create_app
from resolver.access.signing import Signer
from resolver.cli import main
from resolver.demo.fake_taskrouter import recording
from tests.support.env import RECORDING
from tests.support.moto_s3 import KEY, SID, s3_toml
from tests.support.taskrouter import SOURCES_TOML, WS, WT, env_for, sid

CA1 = sid("CA", 1)


@pytest.fixture
def s3_attach_env(tr_server, tmp_path, signed, monkeypatch, no_aws_chain):  # type: ignore[no-untyped-def]
    def install(sources: str) -> dict[str, str]:
        env = env_for(tr_server.url, tmp_path, sources=sources, ARCHIVE_KEY_ID=signed.key_id,
                      ARCHIVE_SECRET=signed.secret, RESOLVER_AUDIT_LOG=str(tmp_path / "audit.jsonl"))
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return env

    return install


def attach(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, ["attach", "--workspace", WS, "--task", WT, "--keep-defaults", *args])


def test_keep_defaults_links_the_call_recording_through_the_s3_source(s3_attach_env, tr_fake, signed):
    env = s3_attach_env(SOURCES_TOML + s3_toml("archive", signed.url))
    task = tr_fake.add_task(WS, WT, json.dumps({"call_sid": CA1}))
    tr_fake.recordings[CA1] = [recording(SID, call_sid=CA1, channels=2)]
    result = attach("--recording-source", "archive")
    assert result.exit_code == 0, result.output
    [entry] = json.loads(task.attributes)["conversations"]["media"]
    assert entry["type"] == "VoiceRecording" and "url_provider" in entry
    settings = config.from_env(env)
    link = Signer(settings.secret_keys).load_link(entry["url"].split("/d/", 1)[1])
    assert (link.source, link.key, link.channels) == ("archive", SID, None)
    # the link serves the object at prefix + SID from the bucket
    app = create_app(settings)
    try:
        now = int(__import__("time").time())
        _, grant = app.extensions["resolver"].signer.sign_grant(
            link, identity="sup@example.com", worker="WK" + "2" * 32, issued_at=now, expires_at=now + 60)
        resp = app.test_client().get(f"/m/{grant}")
        assert resp.status_code == 200 and resp.data == RECORDING
        assert KEY.endswith(SID)
    finally:
        app.extensions["resolver"].close()


def test_the_only_s3_source_is_the_default_without_a_twilio_recording_source(s3_attach_env, tr_fake, signed):
    s3_attach_env(s3_toml("archive", signed.url))
    task = tr_fake.add_task(WS, WT, json.dumps({"call_sid": CA1}))
    tr_fake.recordings[CA1] = [recording(SID, call_sid=CA1)]
    assert attach().exit_code == 0
    assert len(json.loads(task.attributes)["conversations"]["media"]) == 1


def test_a_recording_source_of_another_kind_is_refused(s3_attach_env, tr_fake, signed):
    s3_attach_env(SOURCES_TOML + s3_toml("archive", signed.url))
    tr_fake.add_task(WS, WT, json.dumps({"call_sid": CA1}))
    tr_fake.recordings[CA1] = [recording(SID, call_sid=CA1)]
    result = attach("--recording-source", "crm")
    assert result.exit_code != 0 and "not a twilio-recording or s3 source" in result.output


def test_two_s3_sources_and_no_twilio_one_must_be_chosen(s3_attach_env, tr_fake, signed):
    s3_attach_env(s3_toml("archive", signed.url) + s3_toml("copies", signed.url))
    tr_fake.add_task(WS, WT, json.dumps({"call_sid": CA1}))
    tr_fake.recordings[CA1] = [recording(SID, call_sid=CA1)]
    result = attach()
    assert result.exit_code != 0 and "no_recording_source" in result.output
    assert attach("--recording-source", "copies").exit_code == 0
