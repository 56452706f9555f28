"""`resolver attach` against the fake TaskRouter, with settings from the environment."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from resolver.cli import main
from resolver.demo.fake_taskrouter import recording
from tests.taskrouter_helpers import WS, WT, env_for, sid

RE1, CA1, CH1 = sid("RE", 1), sid("CA", 1), sid("CH", 1)


@pytest.fixture
def run(tr_server, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    for name, value in env_for(tr_server.url, tmp_path).items():
        monkeypatch.setenv(name, value)

    def invoke(*args: str):  # type: ignore[no-untyped-def]
        return CliRunner().invoke(main, ["attach", "--workspace", WS, "--task", WT, *args])

    return invoke


def test_cli_attach_writes_and_prints_the_media(run, tr_fake):
    task = tr_fake.add_task(WS, WT, json.dumps({"call_sid": CA1, "conversationSid": CH1, "keep": [1, 2]}))
    tr_fake.recordings[CA1] = [recording(RE1, call_sid=CA1)]
    result = run("--source", "crm", "--key", "T-1", "--type", "Referenced", "--title", "Ticket", "--keep-defaults")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    after = json.loads(task.attributes)
    assert out["written"] is True and out["media"] == after["conversations"]["media"]
    assert [e["type"] for e in out["media"]] == ["VoiceRecording", "ChatTranscript", "Referenced"]
    assert after["keep"] == [1, 2]
    again = run("--source", "crm", "--key", "T-1", "--type", "Referenced", "--keep-defaults")
    assert json.loads(again.stdout)["written"] is False and len(tr_fake.writes) == 1


def test_cli_dry_run_writes_nothing(run, tr_fake):
    task = tr_fake.add_task(WS, WT, "{}")
    result = run("--source", "recordings", "--key", RE1, "--dry-run")
    assert result.exit_code == 0 and len(json.loads(result.stdout)["media"]) == 1
    assert tr_fake.writes == [] and task.attributes == "{}"


@pytest.mark.parametrize("args, setup, message", [
    (("--source", "recordings", "--key", RE1), None, "task_not_found"),
    (("--source", "recordings", "--key", RE1), "{oops", "attributes_unparseable"),
    (("--source", "crm", "--key", "x", "--type", "Embedded"), "{}", "embedded_refused"),
    (("--source", "recordings"), "{}", "one --key for each --source"),
    ((), "{}", "--keep-defaults"),
])
def test_cli_errors_are_one_clear_line(run, tr_fake, args, setup, message):
    if setup is not None:
        tr_fake.add_task(WS, WT, setup)
    result = run(*args)
    assert result.exit_code != 0 and message in result.output
    assert "Traceback" not in result.output and tr_fake.writes == []
