"""Start-up refuses missing or weak settings with one line naming the problem; no built-in secret."""

from __future__ import annotations

import subprocess

import pytest

from resolver import config
from resolver.errors import ConfigError
from tests.support.env import ROOT, free_port, process_env


@pytest.mark.parametrize(("change", "names"), [
    ({"RESOLVER_SECRET_KEYS": ""}, "RESOLVER_SECRET_KEYS"),
    ({"RESOLVER_SECRET_KEYS": "short"}, "RESOLVER_SECRET_KEYS"),
    ({"RESOLVER_SECRET_KEYS": "k" * 40 + ",short"}, "RESOLVER_SECRET_KEYS"),
    ({"RESOLVER_PUBLIC_URL": ""}, "RESOLVER_PUBLIC_URL"),
    ({"RESOLVER_PUBLIC_URL": "http://media.example.com"}, "RESOLVER_PUBLIC_URL"),
    ({"TWILIO_ACCOUNT_SID": "AC123"}, "TWILIO_ACCOUNT_SID"),
    ({"TWILIO_ACCOUNT_SID": "XX" + "a" * 32}, "TWILIO_ACCOUNT_SID"),
    ({"TWILIO_AUTH_TOKEN": ""}, "TWILIO_AUTH_TOKEN"),
    ({"TWILIO_API_KEY": "SK" + "1" * 32}, "TWILIO_API_SECRET"),
    ({"RESOLVER_SOURCES": "/nonexistent/sources.toml"}, "RESOLVER_SOURCES"),
    ({"RESOLVER_CORS_ORIGINS": "*"}, "RESOLVER_CORS_ORIGINS"),
    ({"RESOLVER_CORS_ORIGINS": "null"}, "RESOLVER_CORS_ORIGINS"),
    ({"RESOLVER_GRANT_TTL": "-5"}, "RESOLVER_GRANT_TTL"),
    ({"RESOLVER_RESOLVE_LIMIT": "lots"}, "RESOLVER_RESOLVE_LIMIT"),
    ({"RESOLVER_STORE": "mysql://x"}, "RESOLVER_STORE"),
    ({"RESOLVER_API_KEYS": "short"}, "RESOLVER_API_KEYS"),
])
def test_bad_setting_names_the_variable(env, change, names):
    with pytest.raises(ConfigError) as e:
        config.from_env({**env, **change})
    assert names in str(e.value) and "\n" not in str(e.value)


def test_good_settings(env):
    s = config.from_env(env)
    assert s.secret_keys[-1] == env["RESOLVER_SECRET_KEYS"].split(",")[-1]
    assert s.allowed_roles == {"admin", "supervisor"} and s.grant_ttl == 60
    assert s.cors_origins == {"https://flex.twilio.com"}
    assert set(s.sources) == {"recordings", "transcripts", "crm"}


def test_api_key_credentials(env):
    s = config.from_env({**env, "TWILIO_AUTH_TOKEN": "", "TWILIO_API_KEY": "SK" + "1" * 32,
                         "TWILIO_API_SECRET": "secret"})
    assert s.twilio_auth == ("SK" + "1" * 32, "secret") and s.auth_token is None


def test_gunicorn_refuses_to_start_with_one_line(env, tmp_path):
    procfile = (ROOT / "Procfile").read_text().split(":", 1)[1].strip()
    bad = process_env(**{**env, "RESOLVER_SECRET_KEYS": "too-short"}, PORT=str(free_port()), HOST="127.0.0.1")
    proc = subprocess.run(procfile, shell=True, env=bad, cwd=tmp_path, capture_output=True, text=True,  # noqa: S602
                          timeout=30, executable="/bin/bash")
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if "configuration error" in line]
    assert lines == ["resolver: configuration error: RESOLVER_SECRET_KEYS: every key must be at least 32 characters"]
    assert "Traceback" not in proc.stderr
