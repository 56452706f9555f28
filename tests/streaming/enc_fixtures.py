"""Keys, recordings and settings for the encrypted-recording tests: the session's fake Twilio holds recordings
encrypted exactly as Twilio encrypts them (resolver/demo/fake_twilio.py), with a key the resolver is given."""

from __future__ import annotations

import base64
import os
from functools import cache
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from resolver.demo.fake_twilio import OAEP, FakeTwilio

KEY_SID = "CR" + "c" * 32  # the public key SID whose private key the resolver holds
OTHER_SID = "CR" + "d" * 32  # a public key SID the resolver has no key for
KEY_ENV = "RECORDING_KEY_TEST"
# Not a multiple of 16 and several stream chunks (256 KiB) long, so ranges cross chunk and block boundaries.
PLAINTEXT = os.urandom(3 * 256 * 1024 + 12345)
ENCRYPTED = "RE" + "e" * 32
PLAIN_WAV = "RE" + "f" * 32
UNKNOWN_KEY = "RE" + "d" * 32  # encrypted under OTHER_SID
WRONG_KEY = "RE" + "c" * 32  # says KEY_SID but was wrapped with another key: unwrap fails
TAMPERED = "RE" + "b" * 32  # one ciphertext byte flipped in the middle
TAMPERED_TAG = "RE" + "a" * 31 + "b"  # the last byte (in the tag) flipped
PLAIN_WAV_BODY = b"RIFF" + os.urandom(50_000)


@cache
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@cache
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey, fmt: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8) -> str:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()


def _flip(sid: str, twilio: FakeTwilio, at: int) -> None:
    body, ctype = twilio.recordings[sid]
    data = bytearray(body)
    data[at] ^= 0x01
    twilio.recordings[sid] = (bytes(data), ctype)


def install(twilio: FakeTwilio) -> None:
    """Put the test recordings into the (session) fake Twilio, once."""
    if ENCRYPTED in twilio.encryption:
        return
    public = private_key().public_key()
    twilio.add_encrypted(ENCRYPTED, PLAINTEXT, public, KEY_SID)
    twilio.add_encrypted(UNKNOWN_KEY, PLAINTEXT, other_key().public_key(), OTHER_SID)
    twilio.add_encrypted(WRONG_KEY, PLAINTEXT, other_key().public_key(), KEY_SID)
    twilio.add_encrypted(TAMPERED, PLAINTEXT, public, KEY_SID)
    _flip(TAMPERED, twilio, len(PLAINTEXT) // 2)
    twilio.add_encrypted(TAMPERED_TAG, PLAINTEXT, public, KEY_SID)
    _flip(TAMPERED_TAG, twilio, len(PLAINTEXT) + 15)
    twilio.recordings[PLAIN_WAV] = (PLAIN_WAV_BODY, "audio/x-wav")


def secrets_of(twilio: FakeTwilio, sid: str) -> list[str]:
    """Every spelling of the key material of one recording (and the private key) that must never be output."""
    details = twilio.encryption[sid]
    wrapped, iv = base64.b64decode(details["encrypted_cek"]), base64.b64decode(details["iv"])
    cek = private_key().decrypt(wrapped, OAEP)
    body_lines = [line for line in pem(private_key()).splitlines() if not line.startswith("-----")]
    found = [details["encrypted_cek"], details["iv"], iv.hex(), cek.hex(), base64.b64encode(cek).decode(),
             base64.urlsafe_b64encode(cek).decode(), *body_lines]
    return [s for s in found if len(s) >= 16]


def encrypted_env(tmp_path: Path, env: dict[str, str], key_pem: str | None = None) -> dict[str, str]:
    path = tmp_path / "encrypted-sources.toml"
    path.write_text(f"""
[sources.recordings]
kind = "twilio-recording"
format = "wav"
private_keys = {{ {KEY_SID} = "{KEY_ENV}" }}
""")
    return {**env, "RESOLVER_SOURCES": str(path), KEY_ENV: key_pem or pem(private_key())}
