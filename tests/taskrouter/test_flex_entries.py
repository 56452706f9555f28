"""Media entries as Flex reads them: start_time in milliseconds, Twilio's channels, one VoiceRecording per task,
nothing Flex does not read. Against the fake TaskRouter over HTTP where a task is involved."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests

from resolver.access.links import MediaSpec, build_entry
from resolver.access.signing import Signer
from resolver.demo.fake_taskrouter import recording
from resolver.errors import BadRequest
from resolver.taskrouter import Attacher, TwilioRest
from tests.support.taskrouter import PUBLIC_URL, WS, WT, sid

RE1, RE2, RE3 = sid("RE", 1), sid("RE", 2), sid("RE", 3)
CA1, CA2, CF1 = sid("CA", 1), sid("CA", 2), sid("CF", 1)
T10 = 1773136800000  # Tue, 10 Mar 2026 10:00:00 +0000


@pytest.fixture
def attacher(tr_settings) -> Iterator[Attacher]:  # type: ignore[no-untyped-def]
    with requests.Session() as s:
        s.trust_env = False
        yield Attacher(tr_settings, Signer(tr_settings.secret_keys), TwilioRest(tr_settings, s, sleep=lambda _: None))


def entry(tr_settings, **spec) -> dict:  # type: ignore[no-untyped-def]
    return build_entry(MediaSpec(**spec), task_sid=WT, sources=tr_settings.sources,
                       signer=Signer(tr_settings.secret_keys), public_url=PUBLIC_URL)


def key_of(e: dict, tr_settings) -> str:  # type: ignore[no-untyped-def]
    return Signer(tr_settings.secret_keys).load_link(e["url"].removeprefix(PUBLIC_URL + "/d/")).key


# ---- one entry ----

def test_a_dual_channel_voice_recording_has_exactly_what_flex_reads(tr_settings):
    e = entry(tr_settings, type="VoiceRecording", source="recordings", key=RE1, title="Call", channels=2,
              start_time=T10)
    assert set(e) == {"type", "url", "url_provider", "title", "channels", "start_time"}
    assert e["channels"] == ["customer", "others"]
    assert e["start_time"] == T10 and isinstance(e["start_time"], int)
    assert e["url"].startswith(PUBLIC_URL + "/d/") and e["url_provider"].startswith(PUBLIC_URL + "/p/")
    # the JSON Insights gets carries a number, not a string
    assert f'"start_time":{T10}' in json.dumps(e, separators=(",", ":"))


def test_a_mono_recording_names_no_channels_and_an_unknown_start_is_left_out(tr_settings):
    e = entry(tr_settings, type="VoiceRecording", source="recordings", key=RE1, channels=1)
    assert set(e) == {"type", "url", "url_provider"}


def test_referenced_and_raw_entries_carry_url_and_title_only(tr_settings):
    ref = entry(tr_settings, type="Referenced", source="recordings", key=RE1, title="Call 2", channels=2,
                start_time=T10)
    assert set(ref) == {"type", "url", "title"}


@pytest.mark.parametrize(("given", "expected"), [
    (T10, T10),
    ("2026-03-10T10:00:00Z", T10),
    ("2026-03-10T12:00:00+02:00", T10),
    (None, None),
])
def test_start_time_is_taken_as_milliseconds_or_an_iso_time(given, expected):
    raw = {"type": "VoiceRecording", "source": "recordings", "key": RE1, "start_time": given}
    assert MediaSpec.parse(raw).start_time == expected


@pytest.mark.parametrize("given", [True, -1, 1.5, "2026-03-10T10:00:00", "yesterday", "1773136800000", 10**20])
def test_start_time_that_is_not_a_time_is_refused(given):
    with pytest.raises(BadRequest) as e:
        MediaSpec.parse({"type": "VoiceRecording", "source": "recordings", "key": RE1, "start_time": given})
    assert e.value.code == "bad_media"


# ---- keep_defaults with several recordings ----

def test_keep_defaults_with_a_conference_of_three_recordings_writes_one_voice_recording(
        tr_fake, attacher, tr_settings):
    task = tr_fake.add_task(WS, WT, json.dumps({"conference": {"sid": CF1, "participants": {
        "customer": CA1, "worker": CA2}}}))
    # Twilio lists newest first; the earliest recording is the one Insights gets to play
    tr_fake.recordings[CF1] = [
        recording(RE3, conference_sid=CF1, channels=1, start_time="Tue, 10 Mar 2026 10:20:00 +0000"),
        recording(RE2, conference_sid=CF1, channels=1, start_time="Tue, 10 Mar 2026 10:10:00 +0000"),
        recording(RE1, conference_sid=CF1, channels=1, start_time="Tue, 10 Mar 2026 10:00:00 +0000")]
    attacher.attach(WS, WT, keep_defaults=True)
    media = json.loads(task.attributes)["conversations"]["media"]
    assert [e["type"] for e in media] == ["VoiceRecording", "Referenced", "Referenced"]
    assert [key_of(e, tr_settings) for e in media] == [RE1, RE2, RE3]
    assert [e["title"] for e in media] == [f"Call recording {i} of 3" for i in (1, 2, 3)]
    assert media[0]["start_time"] == T10 and "channels" not in media[0]
    assert all(set(e) == {"type", "url", "title"} for e in media[1:])
    assert attacher.attach(WS, WT, keep_defaults=True).written is False
    assert len(tr_fake.writes) == 1


def test_the_recording_flex_named_in_segment_link_keeps_the_voice_recording_slot(tr_fake, attacher, tr_settings):
    segment = f"https://api.twilio.com/2010-04-01/Accounts/AC{'a' * 32}/Recordings/{RE3}"
    task = tr_fake.add_task(WS, WT, json.dumps({"call_sid": CA1, "conversations": {"segment_link": segment}}))
    tr_fake.recordings[CA1] = [recording(RE3, call_sid=CA1, start_time="Tue, 10 Mar 2026 10:20:00 +0000"),
                               recording(RE1, call_sid=CA1)]
    attacher.attach(WS, WT, keep_defaults=True)
    media = json.loads(task.attributes)["conversations"]["media"]
    assert [(e["type"], key_of(e, tr_settings)) for e in media] == [("VoiceRecording", RE3), ("Referenced", RE1)]


def test_a_task_that_already_has_a_voice_recording_gets_the_defaults_as_referenced(tr_fake, attacher):
    theirs = {"type": "VoiceRecording", "url": "https://example.org/their-player", "url_provider": "https://x/y"}
    task = tr_fake.add_task(WS, WT, json.dumps({"call_sid": CA1, "conversations": {"media": [theirs]}}))
    tr_fake.recordings[CA1] = [recording(RE1, call_sid=CA1)]
    attacher.attach(WS, WT, keep_defaults=True)
    media = json.loads(task.attributes)["conversations"]["media"]
    assert media[0] == theirs and [e["type"] for e in media] == ["VoiceRecording", "Referenced"]
