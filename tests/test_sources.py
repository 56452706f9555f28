"""Sources: keys never leave their base_url; the sources file is validated at start-up."""

from __future__ import annotations

import pytest
from urllib3.util import parse_url

from resolver.errors import BadRequest, ConfigError
from resolver.sources import Source, TwilioContext, load_sources, upstream_url

HTTP = Source(name="t", kind="http", base_url="https://storage.example.com/transcripts/")
REC = Source(name="r", kind="twilio-recording", base_url="https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/",
             suffix=".mp3")
TWILIO = TwilioContext(api_url="https://api.twilio.com", account_sid="AC" + "a" * 32, auth=("AC", "tok"))


@pytest.mark.parametrize("key", [
    "..", "../secret", "a/../../b", "%2e%2e/x", "%2E%2E", "//evil.example/x", "\\evil", "\\\\host\\share",
    "https://evil.example/", "http:/x", "a\x00b", "a\r\nSet-Cookie: x", "a?b=c", "a#frag", "/abs", "a//b", "./a",
    "x" * 513, "", "@evil.example", "a:b@c", "é",
])
def test_bad_keys_are_refused(key):
    with pytest.raises(BadRequest):
        upstream_url(HTTP, key)


@pytest.mark.parametrize("key", ["calls/2026/t1.json", "a", "A-b_c.d~e", "x" * 512])
def test_good_keys_stay_under_base(key):
    url = upstream_url(HTTP, key)
    parts = parse_url(url)
    assert parts.host == "storage.example.com" and parts.path.startswith("/transcripts/")


def test_recording_keys_are_sids_and_get_format_and_channels():
    assert upstream_url(REC, "RE" + "f" * 32).endswith("/Recordings/RE" + "f" * 32 + ".mp3")
    assert upstream_url(REC, "RE" + "f" * 32, channels=2).endswith(".mp3?RequestedChannels=2")
    with pytest.raises(BadRequest):
        upstream_url(REC, "CA" + "f" * 32)


def write(tmp_path, text: str) -> str:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(("text", "message"), [
    ("[sources.a]\nkind='ftp'", "kind must be one of"),
    ("[sources.a]\nkind='http'\nbase_url='http://storage.example.com/'", "https://"),
    ("[sources.a]\nkind='http'\nbase_url='https://u:p@storage.example.com/'", "no credentials"),
    ("[sources.a]\nkind='http'\nbase_url='https://s.example.com/'\nauth={type='bearer', token_env='NOPE'}",
     "NOPE"),
    ("[sources.a]\nkind='twilio-recording'\nformat='ogg'", "format"),
    ("not toml = = =", "not valid TOML"),
    ("[other]\nx=1", "no [sources.NAME]"),
])
def test_bad_sources_file_is_one_clear_line(tmp_path, text, message):
    with pytest.raises(ConfigError) as e:
        load_sources(write(tmp_path, text), {}, TWILIO)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_unreadable_sources_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_sources(str(tmp_path / "missing.toml"), {}, TWILIO)


def test_http_on_loopback_is_allowed_for_local_stores(tmp_path):
    sources = load_sources(write(tmp_path, "[sources.a]\nkind='http'\nbase_url='http://127.0.0.1:9/x'"), {}, TWILIO)
    assert sources["a"].base_url == "http://127.0.0.1:9/x/"


def test_source_repr_hides_credentials(tmp_path):
    text = "[sources.a]\nkind='http'\nbase_url='https://s.example.com/'\nauth={type='bearer', token_env='T'}"
    sources = load_sources(write(tmp_path, text), {"T": "very-secret-token"}, TWILIO)
    assert "very-secret-token" not in repr(sources)
