"""`resolver keygen --recording-key` and what `resolver check` says about recording keys."""

from __future__ import annotations

import os
import stat

from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from resolver.cli import main
from tests.support.env import base_env

SID = "CR" + "7" * 32


def test_keygen_writes_a_private_key_and_prints_the_public_pem(tmp_path):
    out = tmp_path / "rec.pem"
    result = CliRunner().invoke(main, ["keygen", "--recording-key", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("-----BEGIN PUBLIC KEY-----") and "PRIVATE" not in result.stdout
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    key = serialization.load_pem_private_key(out.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    public = serialization.load_pem_public_key(result.stdout.encode())
    assert public.public_numbers() == key.public_key().public_numbers()
    assert "private_keys" in result.stderr  # the next steps
    again = CliRunner().invoke(main, ["keygen", "--recording-key", "--out", str(out)])
    assert again.exit_code != 0 and "not overwritten" in again.output
    assert serialization.load_pem_private_key(out.read_bytes(), password=None).private_numbers() == \
        key.private_numbers()


def test_plain_keygen_still_prints_a_signing_key():
    result = CliRunner().invoke(main, ["keygen"])
    assert result.exit_code == 0 and len(result.stdout.strip()) >= 48 and "BEGIN" not in result.stdout


def _env(tmp_path, twilio, storage, pem: str) -> dict[str, str]:
    sources = tmp_path / "rec-sources.toml"
    sources.write_text(f'[sources.recordings]\nkind = "twilio-recording"\nformat = "wav"\n'
                       f'private_keys = {{ {SID} = "REC_KEY" }}\n')
    return {**base_env(tmp_path, twilio, storage), "RESOLVER_SOURCES": str(sources), "REC_KEY": pem}


def test_check_names_the_sids_each_source_can_decrypt(tmp_path, twilio, storage):
    out = tmp_path / "rec.pem"
    assert CliRunner().invoke(main, ["keygen", "--recording-key", "--out", str(out)]).exit_code == 0
    pem = out.read_text()
    result = CliRunner().invoke(main, ["check", "--timeout", "3"], env=_env(tmp_path, twilio, storage, pem))
    assert result.exit_code == 0, result.output
    assert f"can decrypt recordings encrypted for {SID} (RSA 2048)" in result.output
    body = [line for line in pem.splitlines() if not line.startswith("-----")]
    assert not any(line in result.output for line in body)


def test_check_fails_with_one_line_on_a_bad_key(tmp_path, twilio, storage):
    result = CliRunner().invoke(main, ["check"], env=_env(tmp_path, twilio, storage, "-----BEGIN PRIVATE KEY-----"))
    assert result.exit_code == 1
    assert f"sources.recordings: private_keys.{SID}: REC_KEY does not hold a readable PEM private key" in result.output
