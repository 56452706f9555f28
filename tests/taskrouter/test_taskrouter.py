"""attach against a fake TaskRouter on 127.0.0.1: conditional writes, merging, Flex's rules, errors."""

from __future__ import annotations

import json
import threading

import pytest
import requests

from resolver import taskrouter as tr
from resolver.access.links import MediaSpec
from resolver.access.signing import Signer
from resolver.demo.fake_taskrouter import FakeTask, recording
from resolver.errors import BadRequest
from resolver.taskrouter import Attacher, TwilioRest
from tests.support.taskrouter import ACCOUNT, PUBLIC_URL, WS, WT, env_for, sid

RE1, RE2, RE3 = sid("RE", 1), sid("RE", 2), sid("RE", 3)
CA1, CA2, CF1 = sid("CA", 1), sid("CA", 2), sid("CF", 1)
CH1 = sid("CH", 1)

PRE_EXISTING = {
    "type": "inbound",
    "name": "Zoë Müller",
    "from": "+15550100",
    "customers": {"name": "Zoë", "tags": ["vip", 7, 2.5, None, True]},
    "priority_score": 0.1,
    "big": 12345678901234567890,
    "conversations": {"conversation_id": "WT-x", "segment_link": None, "abandoned": "No"},
}


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def session():  # type: ignore[no-untyped-def]
    with requests.Session() as s:
        s.trust_env = False
        yield s


@pytest.fixture
def attacher(tr_settings, session, sleeps) -> Attacher:  # type: ignore[no-untyped-def]
    return Attacher(tr_settings, Signer(tr_settings.secret_keys), TwilioRest(tr_settings, session, sleep=sleeps))


def rec(key: str, title: str = "Call") -> MediaSpec:
    return MediaSpec(type="VoiceRecording", source="recordings", key=key, title=title)


def attrs_of(task: FakeTask) -> dict:
    return json.loads(task.attributes)


def without_media(attrs: dict) -> dict:
    copy = json.loads(json.dumps(attrs))
    copy.get("conversations", {}).pop("media", None)
    return copy


def link_of(entry: dict, tr_settings) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    token = entry["url"].removeprefix(PUBLIC_URL + "/d/")
    link = Signer(tr_settings.secret_keys).load_link(token)
    return link.source, link.key


# ---- merging and writing ----

def test_attach_adds_entries_and_keeps_every_other_attribute(tr_fake, attacher, tr_settings):
    task = tr_fake.add_task(WS, WT, json.dumps(PRE_EXISTING))
    etag_read = task.etag
    result = attacher.attach(WS, WT, [rec(RE1), MediaSpec(type="Referenced", source="crm", key="T-1")])
    after = attrs_of(task)
    assert without_media(after) == PRE_EXISTING
    assert after["big"] == 12345678901234567890 and after["name"] == "Zoë Müller"
    media = after["conversations"]["media"]
    assert [e["type"] for e in media] == ["VoiceRecording", "Referenced"]
    assert link_of(media[0], tr_settings) == ("recordings", RE1)
    assert result.written and result.media == media
    assert [w["if_match"] for w in tr_fake.writes] == [etag_read]


def test_voice_recording_entry_gets_url_provider(tr_fake, attacher):
    task = tr_fake.add_task(WS, WT, "{}")
    attacher.attach(WS, WT, [rec(RE1)])
    entry = attrs_of(task)["conversations"]["media"][0]
    assert entry["url"].startswith(PUBLIC_URL + "/d/")
    assert entry["url_provider"] == entry["url"].replace("/d/", "/p/")


def test_attaching_twice_changes_nothing_and_writes_nothing(tr_fake, attacher):
    task = tr_fake.add_task(WS, WT, json.dumps(PRE_EXISTING))
    specs = [rec(RE1), MediaSpec(type="ChatTranscript", sid=CH1)]
    attacher.attach(WS, WT, specs)
    first = task.attributes
    second = attacher.attach(WS, WT, specs)
    assert task.attributes == first
    assert len(tr_fake.writes) == 1 and not second.written and second.added == []


def test_duplicates_are_found_by_what_they_point_at_not_by_title(tr_fake, attacher, tr_settings):
    signer = Signer(tr_settings.secret_keys)
    existing = tr.Attacher(tr_settings, signer, None)._entry(rec(RE1, title="Old title"), WT)  # type: ignore[arg-type]
    task = tr_fake.add_task(WS, WT, json.dumps({"conversations": {"media": [existing, {"type": "ChatTranscript",
                                                                                     "sid": CH1}]}}))
    result = attacher.attach(WS, WT, [rec(RE1, title="New title"), MediaSpec(type="ChatTranscript", sid=CH1),
                                      rec(RE2)])
    media = attrs_of(task)["conversations"]["media"]
    assert [link_of(e, tr_settings) for e in media if e["type"] == "VoiceRecording"] == [
        ("recordings", RE1), ("recordings", RE2)]
    assert media[0]["title"] == "Old title"
    assert [spec.key for spec, _ in result.added] == [RE2]


def test_foreign_entries_are_kept_in_place(tr_fake, attacher):
    foreign = {"type": "Referenced", "url": "https://crm.example.com/x", "title": "CRM"}
    task = tr_fake.add_task(WS, WT, json.dumps({"conversations": {"media": [foreign]}}))
    attacher.attach(WS, WT, [rec(RE1)])
    assert attrs_of(task)["conversations"]["media"][0] == foreign


@pytest.mark.parametrize("raw", ['{"conversations": null}', '{"conversations": {"media": null, "x": 1}}'])
def test_null_conversations_or_media_count_as_empty(tr_fake, attacher, raw):
    task = tr_fake.add_task(WS, WT, raw)
    attacher.attach(WS, WT, [rec(RE1)])
    after = attrs_of(task)
    assert len(after["conversations"]["media"]) == 1
    assert after["conversations"].get("x", 1) == 1


def test_dry_run_writes_nothing(tr_fake, attacher):
    task = tr_fake.add_task(WS, WT, "{}")
    result = attacher.attach(WS, WT, [rec(RE1)], dry_run=True)
    assert tr_fake.writes == [] and task.attributes == "{}"
    assert len(result.media) == 1 and not result.written


# ---- concurrent writers ----

def test_a_write_between_our_read_and_write_is_kept(tr_fake, attacher):
    task = tr_fake.add_task(WS, WT, json.dumps(PRE_EXISTING))
    foreign = {"type": "Referenced", "url": "https://crm.example.com/y", "title": "CRM"}

    def other_writer(t: FakeTask) -> None:
        attrs = json.loads(t.attributes)
        attrs["wrapup_code"] = "resolved"
        attrs["conversations"]["media"] = [foreign]
        t.attributes = json.dumps(attrs)

    tr_fake.after_read.append(other_writer)
    result = attacher.attach(WS, WT, [rec(RE1)])
    after = attrs_of(task)
    assert after["wrapup_code"] == "resolved"
    assert after["conversations"]["media"][0] == foreign and len(after["conversations"]["media"]) == 2
    assert [w["status"] for w in tr_fake.writes] == [412, 200]
    assert result.attempts == 2


def test_a_task_that_never_stops_changing_is_left_alone(tr_fake, attacher):
    task = tr_fake.add_task(WS, WT, "{}")

    def bump(t: FakeTask) -> None:
        t.attributes = json.dumps({"counter": t.version})

    tr_fake.after_read.extend([bump] * tr.CONFLICT_ATTEMPTS)
    with pytest.raises(tr.TaskConflict):
        attacher.attach(WS, WT, [rec(RE1)])
    assert [w["status"] for w in tr_fake.writes] == [412] * tr.CONFLICT_ATTEMPTS
    assert "media" not in task.attributes


def test_concurrent_writers_in_threads_lose_nothing(tr_fake, tr_server, tr_settings):
    task = tr_fake.add_task(WS, WT, json.dumps(PRE_EXISTING))
    url = f"{tr_server.url}/v1/Workspaces/{WS}/Tasks/{WT}"
    workers = 6
    start = threading.Barrier(workers * 2)
    errors: list[BaseException] = []

    def attach_one(i: int) -> None:
        with requests.Session() as s:
            s.trust_env = False
            rest = TwilioRest(tr_settings, s, sleep=lambda _: None)
            att = Attacher(tr_settings, Signer(tr_settings.secret_keys), rest)
            start.wait()
            for _ in range(20):  # TaskConflict means "nothing overwritten, try again"
                try:
                    att.attach(WS, WT, [rec(sid("RE", 100 + i))])
                    return
                except tr.TaskConflict:
                    continue

    def other_writer(i: int) -> None:
        with requests.Session() as s:
            s.trust_env = False
            start.wait()
            while True:  # an integration doing its own read-modify-write with If-Match
                got = s.get(url, auth=tr_settings.twilio_auth, timeout=5)
                attrs = json.loads(got.json()["attributes"])
                attrs[f"other_{i}"] = i
                put = s.post(url, data={"Attributes": json.dumps(attrs)}, auth=tr_settings.twilio_auth,
                             headers={"If-Match": got.headers["ETag"]}, timeout=5)
                if put.status_code == 200:
                    return

    def guarded(fn, i):  # type: ignore[no-untyped-def]
        try:
            fn(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(fn, i)) for i in range(workers)
               for fn in (attach_one, other_writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    after = attrs_of(task)
    assert {after[f"other_{i}"] for i in range(workers)} == set(range(workers))
    keys = sorted(link_of(e, tr_settings)[1] for e in after["conversations"]["media"])
    assert keys == sorted(sid("RE", 100 + i) for i in range(workers))
    assert without_media({k: v for k, v in after.items() if not k.startswith("other_")}) == PRE_EXISTING


# ---- Flex's rules ----

def test_raw_is_never_first(tr_fake, attacher):
    task = tr_fake.add_task(WS, WT, "{}")
    attacher.attach(WS, WT, [MediaSpec(type="Raw", source="transcripts", key="t/1.json", title="Notes"),
                             rec(RE1)])
    assert [e["type"] for e in attrs_of(task)["conversations"]["media"]] == ["VoiceRecording", "Raw"]


def test_an_existing_raw_first_list_is_fixed_when_we_add(tr_fake, attacher):
    raw = {"type": "Raw", "url": "https://example.com/raw", "title": "raw"}
    task = tr_fake.add_task(WS, WT, json.dumps({"conversations": {"media": [raw]}}))
    attacher.attach(WS, WT, [rec(RE1)])
    media = attrs_of(task)["conversations"]["media"]
    assert [e["type"] for e in media] == ["VoiceRecording", "Raw"] and media[1] == raw


def test_a_raw_only_list_is_refused(tr_fake, attacher):
    tr_fake.add_task(WS, WT, "{}")
    with pytest.raises(BadRequest) as e:
        attacher.attach(WS, WT, [MediaSpec(type="Raw", source="transcripts", key="t/1.json")])
    assert e.value.code == "raw_only" and tr_fake.writes == []


def test_embedded_is_refused_before_touching_twilio(tr_fake, attacher):
    tr_fake.add_task(WS, WT, "{}")
    with pytest.raises(BadRequest) as e:
        attacher.attach(WS, WT, [MediaSpec(type="Embedded", source="crm", key="x")])
    assert e.value.code == "embedded_refused"
    assert tr_fake.reads == [] and tr_fake.writes == []


# ---- keep defaults ----

def test_keep_defaults_lists_the_recording_and_transcript_flex_showed(tr_fake, attacher, tr_settings):
    segment = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/{RE1}"
    task = tr_fake.add_task(WS, WT, json.dumps({"call_sid": CA1, "conversationSid": CH1,
                                             "conversations": {"segment_link": segment}}))
    tr_fake.recordings[CA1] = [recording(RE1, call_sid=CA1, channels=2),
                            recording(RE3, call_sid=CA1, status="failed")]
    attacher.attach(WS, WT, [MediaSpec(type="Referenced", source="crm", key="T-9")], keep_defaults=True)
    after = attrs_of(task)
    assert after["conversations"]["segment_link"] == segment
    media = after["conversations"]["media"]
    assert [e["type"] for e in media] == ["VoiceRecording", "ChatTranscript", "Referenced"]
    assert link_of(media[0], tr_settings) == ("recordings", RE1)
    assert media[0]["channels"] == ["customer", "others"]
    assert media[0]["start_time"] == 1773136800000  # 2026-03-10T10:00:00Z in milliseconds, as Insights reads it
    assert media[1] == {"type": "ChatTranscript", "sid": CH1}


def test_keep_defaults_finds_recordings_of_the_conference_and_its_calls(tr_fake, attacher, tr_settings):
    task = tr_fake.add_task(WS, WT, json.dumps({"conference": {"sid": CF1, "participants": {
        "customer": CA1, "worker": CA2}}}))
    tr_fake.recordings[CF1] = [recording(RE1, conference_sid=CF1)]
    tr_fake.recordings[CA2] = [recording(RE2, call_sid=CA2, channels=1)]
    attacher.attach(WS, WT, keep_defaults=True)
    media = attrs_of(task)["conversations"]["media"]
    assert [link_of(e, tr_settings)[1] for e in media] == [RE1, RE2]
    assert [e["title"] for e in media] == ["Call recording 1 of 2", "Call recording 2 of 2"]
    assert [e["type"] for e in media] == ["VoiceRecording", "Referenced"]  # Insights plays only the first
    assert attacher.attach(WS, WT, keep_defaults=True).written is False


def test_keep_defaults_needs_a_recording_source(tr_fake, tr_server, tmp_path, session):
    from resolver import config

    only_crm = '[sources.crm]\nkind = "redirect"\nbase_url = "https://crm.example.com/t/"\n'
    s = config.from_env(env_for(tr_server.url, tmp_path, sources=only_crm))
    tr_fake.add_task(WS, WT, json.dumps({"call_sid": CA1}))
    tr_fake.recordings[CA1] = [recording(RE1, call_sid=CA1)]
    with pytest.raises(tr.NoRecordingSource):
        Attacher(s, Signer(s.secret_keys), TwilioRest(s, session)).attach(WS, WT, keep_defaults=True)
    assert tr_fake.writes == []


def test_only_with_recordings_skips_a_task_without_a_call(tr_fake, attacher):
    tr_fake.add_task(WS, WT, json.dumps({"conversationSid": CH1}))
    result = attacher.attach(WS, WT, keep_defaults=True, only_with_recordings=True)
    assert not result.written and tr_fake.writes == []


@pytest.mark.parametrize("number", ["1.0000000000000001", "1e2", "12345678901234567890.5", "-0", "1E+2", "2.50",
                                    "123456789012345678901234567890", "-0.0", "5e-324"])
def test_attach_keeps_every_number_as_written(tr_fake, attacher, number):
    raw = '{"score":%s,"nested":{"list":[%s,{"deep":%s}]},"conversations":{"x":%s}}' % ((number,) * 4)
    task = tr_fake.add_task(WS, WT, raw)
    attacher.attach(WS, WT, [rec(RE1)])
    assert len(tr_fake.writes) == 1
    written = task.attributes
    assert written.count(f":{number}") == 3 and f"[{number}," in written
    assert written.startswith('{"score":%s,"nested":{"list":[%s,{"deep":%s}]},"conversations":{"x":%s,"media":'
                              % ((number,) * 4))


# ---- errors ----

@pytest.mark.parametrize("raw", [
    "not json",
    "[1, 2]",
    '"a string"',
    '{"a": 1, "a": 2}',
    '{"x": NaN}',
    '{"x": 1e999}',
    '{"conversations": "x"}',
    '{"conversations": {"media": {"type": "Raw"}}}',
    '{"conversations": {"media": [1]}}',
])
def test_unparseable_attributes_are_never_overwritten(tr_fake, attacher, raw):
    task = tr_fake.add_task(WS, WT, raw)
    with pytest.raises(tr.AttributesUnparseable):
        attacher.attach(WS, WT, [rec(RE1)])
    assert tr_fake.writes == [] and task.attributes == raw


def test_missing_task_is_a_clear_404(tr_fake, attacher):
    with pytest.raises(tr.TaskNotFound) as e:
        attacher.attach(WS, WT, [rec(RE1)])
    assert e.value.status == 404 and "deleted" in e.value.message


def test_task_in_another_workspace_is_not_found(tr_fake, attacher):
    tr_fake.add_task(sid("WS", 2), WT, "{}")
    with pytest.raises(tr.TaskNotFound):
        attacher.attach(WS, WT, [rec(RE1)])


def test_a_completed_task_that_twilio_refuses_is_a_clear_error(tr_fake, attacher):
    tr_fake.add_task(WS, WT, "{}", status="completed")
    tr_fake.refuse_closed_writes = True
    with pytest.raises(tr.TaskClosed):
        attacher.attach(WS, WT, [rec(RE1)])


def test_a_completed_task_twilio_still_accepts_is_updated(tr_fake, attacher):
    task = tr_fake.add_task(WS, WT, "{}", status="completed")
    assert attacher.attach(WS, WT, [rec(RE1)]).written
    assert len(attrs_of(task)["conversations"]["media"]) == 1


def test_bad_credentials_are_reported_not_retried(tr_fake, attacher, sleeps):
    tr_fake.credentials.clear()
    tr_fake.add_task(WS, WT, "{}")
    with pytest.raises(tr.TwilioAuthFailed) as e:
        attacher.attach(WS, WT, [rec(RE1)])
    assert e.value.status == 502 and sleeps == []


def test_twilio_5xx_is_retried_with_backoff(tr_fake, attacher, sleeps):
    task = tr_fake.add_task(WS, WT, "{}")
    tr_fake.fail_next.extend([503, 500])
    assert attacher.attach(WS, WT, [rec(RE1)]).written
    assert sleeps == [0.25, 0.5]
    assert "media" in task.attributes


def test_a_failing_write_is_retried_and_lands_once(tr_fake, attacher, sleeps):
    task = tr_fake.add_task(WS, WT, "{}")

    def fail_the_write(_: FakeTask) -> None:
        tr_fake.fail_next.append(502)

    tr_fake.after_read.append(fail_the_write)  # the read succeeds, the first write answers 502
    result = attacher.attach(WS, WT, [rec(RE1)])
    assert result.written and sleeps == [0.25]
    assert len(attrs_of(task)["conversations"]["media"]) == 1


def test_twilio_failing_for_good_is_a_clear_502(tr_fake, attacher, sleeps):
    tr_fake.add_task(WS, WT, "{}")
    tr_fake.fail_next.extend([500] * 10)
    with pytest.raises(tr.TwilioUnavailable) as e:
        attacher.attach(WS, WT, [rec(RE1)])
    assert e.value.status == 502 and sleeps == list(tr.BACKOFF) and tr_fake.writes == []


def test_unreachable_twilio_is_a_clear_502(tr_settings, sleeps, session):
    from dataclasses import replace

    closed = replace(tr_settings, taskrouter_url="http://127.0.0.1:9")
    att = Attacher(closed, Signer(closed.secret_keys), TwilioRest(closed, session, sleep=sleeps))
    with pytest.raises(tr.TwilioUnavailable):
        att.attach(WS, WT, [rec(RE1)])
    assert len(sleeps) == len(tr.BACKOFF)


@pytest.mark.parametrize("ws, wt", [("WSbad", WT), (WS, "WT../../x"), (WS, sid("WT", 0xabc).upper()), ("", "")])
def test_bad_sids_are_refused_before_any_request(tr_fake, attacher, ws, wt):
    with pytest.raises(BadRequest):
        attacher.attach(ws, wt, [rec(RE1)])
    assert tr_fake.reads == []


def test_error_messages_hold_no_secret(tr_fake, attacher, tr_settings):
    tr_fake.credentials.clear()
    tr_fake.add_task(WS, WT, "{}")
    with pytest.raises(tr.TwilioAuthFailed) as e:
        attacher.attach(WS, WT, [rec(RE1)])
    assert tr_settings.twilio_auth[1] not in e.value.message and tr_settings.secret_keys[0] not in e.value.message


# ---- small pure functions ----

@pytest.mark.parametrize("value, expected", [
    ("Tue, 10 Mar 2026 10:00:00 +0000", 1773136800000),
    ("Tue, 10 Mar 2026 12:00:00 +0200", 1773136800000),
    ("Tue, 10 Mar 2026 10:00:00", None),  # no offset: unknown, not guessed
    ("yesterday", None),
    (None, None),
])
def test_epoch_ms(value, expected):
    assert tr.epoch_ms(value) == expected


def test_call_sids_from_flex_voice_attributes():
    attrs = {"call_sid": CA1, "conference": {"sid": CF1, "participants": {"customer": CA1, "worker": CA2,
                                                                          "junk": "../x"}}}
    assert tr.call_sids(attrs) == [CA1, CF1, CA2]


def test_fake_task_router_enforces_etags(tr_fake, tr_server, tr_settings):
    tr_fake.add_task(WS, WT, "{}")
    url = f"{tr_server.url}/v1/Workspaces/{WS}/Tasks/{WT}"
    got = requests.get(url, auth=tr_settings.twilio_auth, timeout=5)
    stale = requests.post(url, data={"Attributes": "{}"}, headers={"If-Match": '"99"'}, auth=tr_settings.twilio_auth,
                          timeout=5)
    fresh = requests.post(url, data={"Attributes": '{"a":1}'}, headers={"If-Match": got.headers["ETag"]},
                          auth=tr_settings.twilio_auth, timeout=5)
    assert (stale.status_code, fresh.status_code) == (412, 200)
    assert fresh.headers["ETag"] != got.headers["ETag"]
