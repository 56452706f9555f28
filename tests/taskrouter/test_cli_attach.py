"""`resolver attach` against the fake TaskRouter, with settings from the environment."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from resolver.cli import main
from resolver.demo.fake_taskrouter import recording
from tests.support.taskrouter import WS, WT, env_for, sid

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


def _records(path) -> list[dict]:  # type: ignore[no-untyped-def]
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["event"] not in ("chain_start", "chain_end")]


def test_cli_attach_and_dry_run_are_audited_with_the_operator(run, tr_fake, tmp_path, monkeypatch):
    log = tmp_path / "audit.log"
    monkeypatch.setenv("RESOLVER_AUDIT_LOG", str(log))
    tr_fake.add_task(WS, WT, "{}")
    assert run("--source", "recordings", "--key", RE1, "--dry-run").exit_code == 0
    assert run("--source", "recordings", "--key", RE1).exit_code == 0
    assert run("--source", "recordings", "--key", RE1).exit_code == 0
    attach = [r for r in _records(log) if r["event"] == "attach"]
    assert [r["outcome"] for r in attach] == ["dry_run", "written", "unchanged"]
    assert all(r["via"] == "cli" and r["operator"] and r["task_sid"] == WT for r in attach)
    links = [r for r in _records(log) if r["event"] == "link"]
    assert links and all(r["outcome"] == "issued" and r["via"] == "cli" for r in links)


def test_cli_refused_attach_is_audited(run, tr_fake, tmp_path, monkeypatch):
    log = tmp_path / "audit.log"
    monkeypatch.setenv("RESOLVER_AUDIT_LOG", str(log))
    tr_fake.add_task(WS, WT, "{}")
    assert run("--source", "crm", "--key", "x", "--type", "Embedded").exit_code != 0
    [refused] = [r for r in _records(log) if r["event"] == "attach"]
    assert refused["outcome"] == "refused" and refused["via"] == "cli"


def test_cli_links_are_audited_and_stdout_stays_json(tr_server, tmp_path, monkeypatch):
    for name, value in env_for(tr_server.url, tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RESOLVER_AUDIT_LOG", "-")
    result = CliRunner().invoke(main, ["links", "--task", WT, "--source", "recordings", "--key", RE1])
    assert result.exit_code == 0, result.output
    [entry] = json.loads(result.stdout)["media"]
    [record] = [json.loads(line) for line in result.stderr.splitlines() if '"event":"link"' in line.replace(" ", "")]
    assert record["outcome"] == "issued" and record["via"] == "cli" and record["task_sid"] == WT
    assert entry["url"].startswith("https://") and record["source"] == "recordings" and record["key"] == RE1
