"""`private_keys` on twilio-recording sources: every key is checked at start-up, one line naming source and SID."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from enc_fixtures import KEY_ENV, KEY_SID, pem, private_key

from resolver import config
from resolver.errors import ConfigError


def write_sources(tmp_path, body: str) -> str:
    path = tmp_path / "keys.toml"
    path.write_text(body)
    return str(path)


def recordings(fmt: str | None = "wav", keys: str = f'{{ {KEY_SID} = "{KEY_ENV}" }}') -> str:
    line = f'format = "{fmt}"\n' if fmt else ""
    return f'[sources.recordings]\nkind = "twilio-recording"\n{line}private_keys = {keys}\n'


def load(tmp_path, env, body: str, key_value: str | None) -> config.Settings:
    full = {**env, "RESOLVER_SOURCES": write_sources(tmp_path, body)}
    if key_value is not None:
        full[KEY_ENV] = key_value
    return config.from_env(full)


@pytest.mark.parametrize("fmt", [
    serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL,  # PKCS#1
])
def test_pkcs8_and_pkcs1_keys_load(tmp_path, env, fmt):
    settings = load(tmp_path, env, recordings(), pem(private_key(), fmt))
    source = settings.sources["recordings"]
    assert source.key_sids == (KEY_SID,)
    assert source.private_key(KEY_SID).public_key().public_numbers() == private_key().public_key().public_numbers()
    assert source.private_key("CR" + "0" * 32) is None
    assert "PRIVATE" not in repr(source) and "private_keys" not in repr(source)


def test_a_pem_with_escaped_newlines_loads(tmp_path, env):
    """Some platforms cannot hold a newline in a variable: `\\n` stands for it."""
    settings = load(tmp_path, env, recordings(), pem(private_key()).replace("\n", "\\n"))
    assert settings.sources["recordings"].key_sids == (KEY_SID,)


def _small() -> str:
    return pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))  # noqa: S505 - the key refused


def _ec() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _protected() -> str:
    return private_key().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(b"pass-phrase")).decode()


def _mangled() -> str:
    text = pem(private_key())
    return text[:200] + "!!" + text[202:]


@pytest.mark.parametrize(("value", "expected"), [
    (None, f"environment variable {KEY_ENV} is not set"),
    ("", f"environment variable {KEY_ENV} is not set"),
    ("not a key", "does not hold a readable PEM private key"),
    (_mangled(), "does not hold a readable PEM private key"),
    (_small(), "has 1024 bits; at least 2048 are required"),
    (_ec(), "is not an RSA key"),
    (_protected(), "is password-protected"),
])
def test_a_bad_key_stops_start_up_with_one_line_naming_source_and_sid(tmp_path, env, value, expected):
    with pytest.raises(ConfigError) as e:
        load(tmp_path, env, recordings(), value)
    message = str(e.value)
    assert message.startswith(f"sources.recordings: private_keys.{KEY_SID}") and expected in message
    assert "\n" not in message and "MII" not in message and "PRIVATE KEY" not in message


@pytest.mark.parametrize(("body", "expected"), [
    (recordings("mp3"), 'private_keys needs format = "wav"'),
    (recordings(None), 'private_keys needs format = "wav"'),  # the default format is mp3
    (recordings(keys='{ CRnot-a-sid = "X" }'), "is not a public key SID"),
    (recordings(keys=f"{{ {KEY_SID} = 3 }}"), "must name an environment variable"),
    (recordings(keys="{}"), "private_keys must be a table"),
    ('[sources.t]\nkind = "http"\nbase_url = "https://s.example.com/"\n'
     f'private_keys = {{ {KEY_SID} = "{KEY_ENV}" }}\n', "private_keys is for twilio-recording and s3 sources"),
])
def test_private_keys_misconfigurations_stop_start_up(tmp_path, env, body, expected):
    with pytest.raises(ConfigError, match=expected):
        load(tmp_path, env, body, pem(private_key()))


def test_several_keys_for_rotation(tmp_path, env):
    new_sid = "CR" + "e" * 32
    body = recordings(keys=f'{{ {KEY_SID} = "{KEY_ENV}", {new_sid} = "RECORDING_KEY_NEW" }}')
    other = pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    settings = load(tmp_path, {**env, "RECORDING_KEY_NEW": other}, body, pem(private_key()))
    assert settings.sources["recordings"].key_sids == (KEY_SID, new_sid)
