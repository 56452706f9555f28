"""Settings from the environment (the README, "Configuration"), validated once at start-up.

There is no built-in secret: a missing or weak setting raises `ConfigError` with one line naming it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .errors import ConfigError
from .sources import Source, TwilioContext, load_sources
from .twilio_ids import ACCOUNT_SID, API_KEY_SID

MIN_KEY_LENGTH = 32
RATE = re.compile(r"\d+/(second|minute|hour)")
DEFAULT_ORIGINS = "https://flex.twilio.com"


@dataclass(frozen=True)
class Settings:
    # Secrets are left out of repr(), so printing or logging the settings never shows them.
    secret_keys: tuple[str, ...] = field(repr=False)
    public_url: str
    sources: Mapping[str, Source]
    account_sid: str
    twilio_auth: tuple[str, str] = field(repr=False)  # (username, password) for Twilio's REST APIs
    auth_token: str | None = field(repr=False)  # checks X-Twilio-Signature when no shared key is named
    iam_url: str = "https://iam.twilio.com"
    api_url: str = "https://api.twilio.com"
    taskrouter_url: str = "https://taskrouter.twilio.com"
    allowed_roles: frozenset[str] = frozenset({"admin", "supervisor"})
    grant_ttl: int = 60
    cors_origins: frozenset[str] = frozenset({DEFAULT_ORIGINS})
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    resolve_limit: str = "30/minute"
    media_limit: str = "1200/minute"
    store_url: str = ""
    audit_log: str = "-"
    # Knobs the documented settings do not name; tests and operators may tune them.
    connect_timeout: float = 3.05
    read_timeout: float = 20.0  # idle time between upstream bytes, not a cap on the whole stream
    validation_timeout: float = 5.0
    validation_cache_ttl: int = 60
    max_media_bytes: int | None = None
    trusted_proxies: int = 0  # RESOLVER_TRUSTED_PROXIES: how many proxies' X-Forwarded-For to believe
    metrics_token: str | None = field(default=None, repr=False)  # RESOLVER_METRICS_TOKEN; unset: no /metrics
    # TWILIO_WEBHOOK_SHARED_KEYS: key id -> secret, for webhooks Twilio signs with shared keys
    webhook_shared_keys: Mapping[str, str] = field(default_factory=dict, repr=False)


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is required")
    return value


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _base_url(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip() or default
    parts = urlsplit(value)
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise ConfigError(f"{name} must be an https:// URL (http:// only on a loopback host)")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(f"{name} must be a plain base URL without credentials, query or fragment")
    return value.rstrip("/")


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) <= 0:
        raise ConfigError(f"{name} must be a positive whole number of seconds")
    return int(raw)


def _number(env: Mapping[str, str], name: str, default: float | None) -> float | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < 1e15:
        raise ConfigError(f"{name} must be a positive number")
    return value


def _count(env: Mapping[str, str], name: str) -> int:
    raw = env.get(name, "").strip() or "0"
    if not raw.isdigit() or int(raw) > 5:
        raise ConfigError(f"{name} must be a whole number from 0 to 5")
    return int(raw)


def _metrics_token(env: Mapping[str, str]) -> str | None:
    token = env.get("RESOLVER_METRICS_TOKEN", "").strip() or None
    if token is not None and len(token) < MIN_KEY_LENGTH:
        raise ConfigError(f"RESOLVER_METRICS_TOKEN must be at least {MIN_KEY_LENGTH} characters")
    return token


def _rate(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip() or default
    if not RATE.fullmatch(value) or int(value.split("/")[0]) <= 0:
        raise ConfigError(f"{name} must look like N/second, N/minute or N/hour")
    return value


def _origins(env: Mapping[str, str]) -> frozenset[str]:
    origins = _csv(env.get("RESOLVER_CORS_ORIGINS", "") or DEFAULT_ORIGINS)
    for origin in origins:
        parts = urlsplit(origin)
        if origin in ("*", "null") or parts.scheme not in ("https", "http") or not parts.hostname:
            raise ConfigError("RESOLVER_CORS_ORIGINS must list exact origins such as https://flex.twilio.com")
        if parts.path or parts.query or parts.fragment:
            raise ConfigError("RESOLVER_CORS_ORIGINS entries are origins: scheme://host[:port], no path")
    return frozenset(origins)


SHARED_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
MIN_SHARED_SECRET = 16


def _shared_keys(env: Mapping[str, str]) -> dict[str, str]:
    """TWILIO_WEBHOOK_SHARED_KEYS: comma-separated `<key id>:<secret>`."""
    keys: dict[str, str] = {}
    for item in _csv(env.get("TWILIO_WEBHOOK_SHARED_KEYS", "")):
        key_id, _, secret = item.partition(":")
        if not SHARED_KEY_ID.fullmatch(key_id) or len(secret) < MIN_SHARED_SECRET or key_id in keys:
            raise ConfigError("TWILIO_WEBHOOK_SHARED_KEYS must list distinct <key id>:<secret> pairs, each secret "
                              f"at least {MIN_SHARED_SECRET} characters")
        keys[key_id] = secret
    return keys


def _twilio_auth(env: Mapping[str, str], account_sid: str) -> tuple[tuple[str, str], str | None]:
    token = env.get("TWILIO_AUTH_TOKEN", "").strip() or None
    key, secret = env.get("TWILIO_API_KEY", "").strip(), env.get("TWILIO_API_SECRET", "").strip()
    if key or secret:
        if not API_KEY_SID.fullmatch(key):
            raise ConfigError("TWILIO_API_KEY must be an API key SID (SK followed by 32 hex digits)")
        if not secret:
            raise ConfigError("TWILIO_API_SECRET is required with TWILIO_API_KEY")
        return (key, secret), token
    if not token:
        raise ConfigError("TWILIO_AUTH_TOKEN, or TWILIO_API_KEY and TWILIO_API_SECRET, is required")
    return (account_sid, token), token


def default_instance_path() -> str:
    """The app's Flask instance folder, home of the default SQLite store. The server, the CLI and gunicorn's
    master must all find the same file, so they all ask Flask the same question (`resolver.app` is the
    import name `create_app` builds its Flask app with)."""
    from flask import Flask

    return Flask("resolver.app").instance_path


def from_env(env: Mapping[str, str] | None = None, *, instance_path: str | None = None) -> Settings:
    """Read and validate every setting; raise ConfigError naming the first bad one."""
    env = os.environ if env is None else env
    instance_path = instance_path or default_instance_path()
    keys = tuple(_csv(_required(env, "RESOLVER_SECRET_KEYS")))
    if not keys or any(len(k) < MIN_KEY_LENGTH for k in keys):
        raise ConfigError(f"RESOLVER_SECRET_KEYS: every key must be at least {MIN_KEY_LENGTH} characters")
    if len(set(keys)) != len(keys):
        raise ConfigError("RESOLVER_SECRET_KEYS lists the same key twice")
    public_url = _base_url(env, "RESOLVER_PUBLIC_URL", "")
    account_sid = _required(env, "TWILIO_ACCOUNT_SID")
    if not ACCOUNT_SID.fullmatch(account_sid):
        raise ConfigError("TWILIO_ACCOUNT_SID must be AC followed by 32 hex digits")
    twilio_auth, auth_token = _twilio_auth(env, account_sid)
    api_url = _base_url(env, "TWILIO_API_URL", "https://api.twilio.com")
    sources_path = env.get("RESOLVER_SOURCES", "").strip()
    twilio = TwilioContext(api_url=api_url, account_sid=account_sid, auth=twilio_auth)
    sources = load_sources(sources_path, env, twilio) if sources_path else {}
    roles = frozenset(_csv(env.get("RESOLVER_ALLOWED_ROLES", "") or "admin,supervisor"))
    api_keys = tuple(_csv(env.get("RESOLVER_API_KEYS", "")))
    if any(len(k) < MIN_KEY_LENGTH for k in api_keys):
        raise ConfigError(f"RESOLVER_API_KEYS: every key must be at least {MIN_KEY_LENGTH} characters")
    store_url = env.get("RESOLVER_STORE", "").strip() or f"sqlite:///{os.path.join(instance_path, 'resolver.db')}"
    if not store_url.startswith(("sqlite:///", "redis://", "rediss://")):
        raise ConfigError("RESOLVER_STORE must be sqlite:///PATH or redis://HOST:PORT/DB")
    return Settings(
        secret_keys=keys,
        public_url=public_url,
        sources=sources,
        account_sid=account_sid,
        twilio_auth=twilio_auth,
        auth_token=auth_token,
        iam_url=_base_url(env, "TWILIO_IAM_URL", "https://iam.twilio.com"),
        api_url=api_url,
        taskrouter_url=_base_url(env, "TWILIO_TASKROUTER_URL", "https://taskrouter.twilio.com"),
        allowed_roles=roles,
        grant_ttl=_positive_int(env, "RESOLVER_GRANT_TTL", 60),
        cors_origins=_origins(env),
        api_keys=api_keys,
        resolve_limit=_rate(env, "RESOLVER_RESOLVE_LIMIT", "30/minute"),
        media_limit=_rate(env, "RESOLVER_MEDIA_LIMIT", "1200/minute"),
        store_url=store_url,
        audit_log=env.get("RESOLVER_AUDIT_LOG", "").strip() or "-",
        trusted_proxies=_count(env, "RESOLVER_TRUSTED_PROXIES"),
        metrics_token=_metrics_token(env),
        webhook_shared_keys=_shared_keys(env),
        **_upstream_limits(env),
    )


def _upstream_limits(env: Mapping[str, str]) -> dict[str, float | int | None]:
    """Optional knobs for the streaming proxy; the defaults suit Twilio and cloud stores."""
    max_bytes = _number(env, "RESOLVER_MAX_MEDIA_BYTES", None)
    return {
        "connect_timeout": _number(env, "RESOLVER_UPSTREAM_CONNECT_TIMEOUT", Settings.connect_timeout),
        "read_timeout": _number(env, "RESOLVER_UPSTREAM_IDLE_TIMEOUT", Settings.read_timeout),
        "max_media_bytes": int(max_bytes) if max_bytes is not None else None,
    }
