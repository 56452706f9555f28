"""Media sources from the TOML file, and the one function that turns (source, key) into an upstream URL.

A key is confined to its source: it is checked against a strict alphabet, then the URL is built and parsed
again with urllib3's parser (the one requests uses to connect) to prove it still names the source's
scheme, host, port and path prefix (ASVS 13.1.1: the same parser for the check and the fetch).
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import quote

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from urllib3.util import Url, parse_url

from .errors import BadRequest, ConfigError
from .twilio_ids import PUBLIC_KEY_SID, RECORDING_SID

KINDS = ("twilio-recording", "http", "redirect", "s3")
DELIVERIES = ("stream", "presign")
MAX_KEY_LENGTH = 512
KEY_CHARS = re.compile(r"[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*")
MIN_RSA_BITS = 2048
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
RECORDING_TYPES = {"mp3": ("audio/mpeg",), "wav": ("audio/wav", "audio/x-wav", "audio/wave")}
MAX_USES = 1000
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")
# S3 bucket names (the rules for new buckets); a name with dots is reached path-style, never as a host name.
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
REGION = re.compile(r"[a-z]{2}(-[a-z0-9]+){1,4}")
PREFIX = re.compile(r"([A-Za-z0-9._~-]+/)*[A-Za-z0-9._~-]*")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
# an s3 key for a Twilio recording: folders allowed, then the recording SID, then perhaps an extension
_SID_KEY = re.compile(r"(?:[A-Za-z0-9._~-]+/)*(" + RECORDING_SID.pattern + r")(?:\.[A-Za-z0-9]{1,8})?")


@dataclass(frozen=True)
class S3Location:
    """Where an `s3` source's objects live; `Source.base_url` is the bucket (and prefix) URL built from it."""

    bucket: str
    region: str
    prefix: str = ""
    endpoint_url: str = ""  # "" = AWS's own regional endpoint
    delivery: str = "stream"  # or "presign"
    # (access key id, secret access key, session token or "") from the named variables; None = AWS's chain
    keys: tuple[str, str, str] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Source:
    name: str
    kind: str
    base_url: str
    suffix: str = ""
    content_types: tuple[str, ...] = ()
    redirect_hosts: tuple[str, ...] = ()
    max_bytes: int | None = None  # refuse media larger than this (None: no limit of its own)
    max_uses: int | None = None  # redirect sources only: how often one grant may be opened
    # ("bearer", token) or ("basic", user, password); never printed
    auth: tuple[str, ...] | None = field(default=None, repr=False)
    s3: S3Location | None = None  # s3 sources only
    # Voice Recording Encryption: (public key SID "CR...", its RSA private key) pairs; never printed or compared
    private_keys: tuple[tuple[str, rsa.RSAPrivateKey], ...] = field(default=(), repr=False, compare=False)
    # s3 sources with private_keys: Twilio's recordings API, where the encryption details are read (Basic auth)
    details_from: Source | None = field(default=None, repr=False, compare=False)

    def private_key(self, public_key_sid: str) -> rsa.RSAPrivateKey | None:
        """The private key configured for Twilio's public key SID, or None."""
        return next((k for sid, k in self.private_keys if sid == public_key_sid), None)

    @property
    def key_sids(self) -> tuple[str, ...]:
        """The public key SIDs this source can decrypt for (no key material: safe to print)."""
        return tuple(sid for sid, _ in self.private_keys)

    @property
    def mode(self) -> str:
        """What /m/ does: stream the bytes, or answer 302 (redirect sources, s3 sources that presign)."""
        if self.kind == "redirect" or (self.s3 is not None and self.s3.delivery == "presign"):
            return "redirect"
        return "stream"


def check_key(source: Source, key: object) -> str:
    """Return the key if it may be used with this source, else raise BadRequest."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise BadRequest("The media key is missing or too long.", code="bad_key")
    if source.kind == "twilio-recording":
        if not RECORDING_SID.fullmatch(key):
            raise BadRequest("A twilio-recording key is a recording SID (RE + 32 hex digits).", code="bad_key")
        return key
    if source.details_from is not None and not _SID_KEY.fullmatch(key):
        raise BadRequest("An encrypted s3 source's key ends in a recording SID (RE + 32 hex digits, an "
                         "extension allowed).", code="bad_key")
    segments = key.split("/")
    if not KEY_CHARS.fullmatch(key) or any(s in (".", "..") for s in segments):
        raise BadRequest(
            "A media key may use letters, digits, '.', '_', '~', '-' and '/' between names.", code="bad_key"
        )
    return key


@functools.lru_cache(maxsize=256)
def _parsed(base_url: str) -> Url:
    """A base_url as the fetching parser reads it (a handful per process, read on every grant)."""
    return parse_url(base_url)


def upstream_url(source: Source, key: str, *, channels: int | None = None) -> str:
    """Build the URL for `key`, proving with the fetching parser that it stays under base_url."""
    check_key(source, key)
    url = source.base_url + quote(key, safe="/") + source.suffix
    if source.kind == "twilio-recording" and channels == 2:
        url += "?RequestedChannels=2"
    base, built = _parsed(source.base_url), parse_url(url)
    if (built.scheme, built.host, built.port) != (base.scheme, base.host, base.port) or not (
        built.path or ""
    ).startswith(base.path or "/"):
        raise BadRequest("The media key leaves its source.", code="bad_key")
    if built.auth or built.fragment:
        raise BadRequest("The media key leaves its source.", code="bad_key")
    return url


def recording_resource_url(source: Source, key: str) -> tuple[Source, str]:
    """Where the recording resource (JSON) of a key is read, and with which source's credentials: a
    twilio-recording source's own API, or for an s3 source with private_keys the Twilio API it names."""
    check_key(source, key)
    if source.kind == "twilio-recording":
        return source, source.base_url + key + ".json"
    match = _SID_KEY.fullmatch(key)
    if source.details_from is None or match is None:
        raise BadRequest("Only Twilio recordings have a recording resource.", code="bad_key")
    return source.details_from, source.details_from.base_url + match.group(1) + ".json"


def _check_base_url(name: str, url: object, setting: str = "base_url") -> str:
    if not isinstance(url, str) or not url:
        raise ConfigError(f"sources.{name}: {setting} is required")
    try:
        parts = parse_url(url)
    except ValueError as e:
        raise ConfigError(f"sources.{name}: {setting} is not a valid URL") from e
    loopback = parts.host in LOOPBACK_HOSTS
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise ConfigError(f"sources.{name}: {setting} must be https:// (http:// only on a loopback host)")
    if not parts.host or parts.auth or parts.query or parts.fragment:
        raise ConfigError(f"sources.{name}: {setting} must have a host and no credentials, query or fragment")
    if setting == "endpoint_url" and (parts.path or "/") != "/":
        raise ConfigError(f"sources.{name}: endpoint_url is the store's origin only (no path); "
                          "the bucket and prefix are settings of their own")
    return url if url.endswith("/") else url + "/"


def _env_secret(env: Mapping[str, str], name: str, spec: Mapping[str, object], field_name: str) -> str:
    var = spec.get(field_name)
    if not isinstance(var, str) or not var:
        raise ConfigError(f"sources.{name}: auth.{field_name} must name an environment variable")
    value = env.get(var, "")
    if not value:
        raise ConfigError(f"sources.{name}: environment variable {var} (auth.{field_name}) is not set")
    return value


def _auth(env: Mapping[str, str], name: str, spec: object) -> tuple[str, ...] | None:
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise ConfigError(f"sources.{name}: auth must be a table")
    if spec.get("type") == "bearer":
        return ("bearer", _env_secret(env, name, spec, "token_env"))
    if spec.get("type") == "basic":
        return ("basic", _env_secret(env, name, spec, "user_env"), _env_secret(env, name, spec, "password_env"))
    raise ConfigError(f"sources.{name}: auth.type must be 'bearer' or 'basic'")


def _pem(value: str) -> bytes:
    """A PEM from an environment variable; platforms that cannot hold newlines get them written as \\n."""
    return value.strip().replace("\\n", "\n").encode()


def _private_keys(
    env: Mapping[str, str], name: str, spec: object
) -> tuple[tuple[str, rsa.RSAPrivateKey], ...]:
    """`private_keys = { CR... = "ENV_VAR" }`: each key loaded and checked now, one line naming the SID."""
    if spec is None:
        return ()
    if not isinstance(spec, dict) or not spec:
        raise ConfigError(f"sources.{name}: private_keys must be a table of public key SID = environment variable")
    keys = []
    for sid, var in spec.items():
        where = f"sources.{name}: private_keys.{sid}"
        if not PUBLIC_KEY_SID.fullmatch(sid):
            raise ConfigError(f"sources.{name}: private_keys: {sid[:40]!r} is not a public key SID (CR + 32 hex)")
        if not isinstance(var, str) or not var:
            raise ConfigError(f"{where} must name an environment variable")
        value = env.get(var, "")
        if not value.strip():
            raise ConfigError(f"{where}: environment variable {var} is not set")
        try:
            key = load_pem_private_key(_pem(value), password=None)
        except TypeError:
            raise ConfigError(f"{where}: the key in {var} is password-protected; give it unencrypted "
                              "(PKCS#8 or PKCS#1 PEM)") from None
        except (ValueError, UnsupportedAlgorithm):  # never echo the parser's text: it may quote the key
            raise ConfigError(f"{where}: {var} does not hold a readable PEM private key (PKCS#8 or PKCS#1)") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ConfigError(f"{where}: the key in {var} is not an RSA key")
        if key.key_size < MIN_RSA_BITS:
            raise ConfigError(f"{where}: the key in {var} has {key.key_size} bits; at least {MIN_RSA_BITS} "
                              "are required")
        keys.append((sid, key))
    return tuple(keys)


def _str_list(name: str, raw: Mapping[str, object], key: str) -> tuple[str, ...]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"sources.{name}: {key} must be a list of strings")
    return tuple(v.lower() for v in value)


_HOST = re.compile(r"[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?)+(:\d{1,5})?")


def _redirect_hosts(name: str, raw: Mapping[str, object]) -> tuple[str, ...]:
    """Exact DNS names (`host` means port 443, `host:port` that port); no wildcards, schemes or addresses."""
    hosts = _str_list(name, raw, "redirect_hosts")
    for host in hosts:
        if not _HOST.fullmatch(host) or host.replace(".", "").replace(":", "").isdigit():
            raise ConfigError(f"sources.{name}: redirect_hosts entries are DNS names like cdn.example.com")
    return hosts


def _max_bytes(name: str, raw: Mapping[str, object]) -> int | None:
    value = raw.get("max_bytes")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"sources.{name}: max_bytes must be a positive whole number of bytes")
    return value


def _max_uses(name: str, raw: Mapping[str, object]) -> int | None:
    value = raw.get("max_uses")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_USES:
        raise ConfigError(f"sources.{name}: max_uses must be a whole number from 1 to {MAX_USES}")
    return value


def _source(name: str, raw: object, env: Mapping[str, str], twilio: TwilioContext) -> Source:
    if not NAME.fullmatch(name):
        raise ConfigError(f"sources.{name}: a source name is lower-case letters, digits, '-' and '_'")
    if not isinstance(raw, dict):
        raise ConfigError(f"sources.{name} must be a table")
    kind = raw.get("kind")
    if "private_keys" in raw and kind not in ("twilio-recording", "s3"):
        raise ConfigError(f"sources.{name}: private_keys is for twilio-recording and s3 sources")
    if "max_uses" in raw and kind != "redirect":
        raise ConfigError(f"sources.{name}: max_uses is for redirect sources only (a stream makes many "
                          "Range requests per playback)")
    if kind == "twilio-recording":
        fmt = raw.get("format", "mp3")
        if fmt not in RECORDING_TYPES:
            raise ConfigError(f"sources.{name}: format must be 'mp3' or 'wav'")
        private_keys = _private_keys(env, name, raw.get("private_keys"))
        if private_keys and fmt != "wav":
            raise ConfigError(f"sources.{name}: private_keys needs format = \"wav\" (Twilio serves encrypted "
                              "recordings as wav only)")
        return replace(_recordings_api(name, twilio), suffix=f".{fmt}", content_types=RECORDING_TYPES[fmt],
                       redirect_hosts=_redirect_hosts(name, raw), max_bytes=_max_bytes(name, raw),
                       private_keys=private_keys)
    if kind == "http":
        return Source(
            name=name,
            kind=kind,
            base_url=_check_base_url(name, raw.get("base_url")),
            content_types=_str_list(name, raw, "content_types"),
            redirect_hosts=_redirect_hosts(name, raw),
            max_bytes=_max_bytes(name, raw),
            auth=_auth(env, name, raw.get("auth")),
        )
    if kind == "redirect":
        return Source(name=name, kind=kind, base_url=_check_base_url(name, raw.get("base_url")),
                      max_uses=_max_uses(name, raw))
    if kind == "s3":
        location = _s3_location(name, raw, env)
        private_keys = _private_keys(env, name, raw.get("private_keys"))
        if private_keys and location.delivery != "stream":
            raise ConfigError(f"sources.{name}: private_keys needs delivery = \"stream\" (a presigned URL would "
                              "hand the player the ciphertext)")
        return Source(
            name=name,
            kind=kind,
            base_url=_bucket_url(name, location),
            content_types=_str_list(name, raw, "content_types"),
            max_bytes=_max_bytes(name, raw),
            s3=location,
            private_keys=private_keys,
            details_from=_recordings_api(name, twilio) if private_keys else None,
        )
    raise ConfigError(f"sources.{name}: kind must be one of {', '.join(KINDS)}")


S3_FIELDS = {"kind", "bucket", "region", "prefix", "endpoint_url", "credentials", "delivery", "content_types",
             "max_bytes", "private_keys"}


def _s3_location(name: str, raw: Mapping[str, object], env: Mapping[str, str]) -> S3Location:
    unknown = sorted(set(raw) - S3_FIELDS)
    if unknown:
        raise ConfigError(f"sources.{name}: {unknown[0]} is not a setting of s3 sources "
                          "(bucket, region, prefix, endpoint_url, credentials, delivery, content_types, max_bytes, "
                          "private_keys)")
    bucket, region, prefix = raw.get("bucket"), raw.get("region"), raw.get("prefix", "")
    if not isinstance(bucket, str) or not BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ConfigError(f"sources.{name}: bucket must be an S3 bucket name (3-63 of a-z, 0-9, '.', '-')")
    if not isinstance(region, str) or not REGION.fullmatch(region):
        raise ConfigError(f"sources.{name}: region must be an AWS region name like us-east-1")
    if not isinstance(prefix, str) or not PREFIX.fullmatch(prefix) or len(prefix) > 256 or any(
            s in (".", "..") for s in prefix.split("/")):
        raise ConfigError(f"sources.{name}: prefix may use letters, digits, '.', '_', '~', '-' and '/' "
                          "between names (like recordings/)")
    delivery = raw.get("delivery", "stream")
    if delivery not in DELIVERIES:
        raise ConfigError(f"sources.{name}: delivery must be 'stream' or 'presign'")
    endpoint = raw.get("endpoint_url", "")
    if endpoint != "":
        endpoint = _check_base_url(name, endpoint, setting="endpoint_url").rstrip("/")
    return S3Location(bucket=bucket, region=region, prefix=prefix, endpoint_url=endpoint, delivery=delivery,
                      keys=_s3_keys(name, raw.get("credentials"), env))


def _s3_keys(name: str, spec: object, env: Mapping[str, str]) -> tuple[str, str, str] | None:
    """Keys from the environment variables named in `credentials`; None: AWS's standard chain decides."""
    if spec is None:
        return None
    if not isinstance(spec, dict) or not {"access_key_env", "secret_key_env"} <= set(spec) or not set(spec) <= {
            "access_key_env", "secret_key_env", "session_token_env"}:
        raise ConfigError(f"sources.{name}: credentials must be {{ access_key_env = \"VAR\", secret_key_env = "
                          "\"VAR\" }} (optionally session_token_env), or left out for AWS's standard chain")
    values = []
    for field_name in ("access_key_env", "secret_key_env", "session_token_env"):
        var = spec.get(field_name)
        if var is None:
            values.append("")
            continue
        if not isinstance(var, str) or not ENV_NAME.fullmatch(var):
            raise ConfigError(f"sources.{name}: credentials.{field_name} must name an environment variable")
        if not env.get(var, ""):
            raise ConfigError(f"sources.{name}: environment variable {var} (credentials.{field_name}) is not set")
        values.append(env[var])
    return values[0], values[1], values[2]


def _bucket_url(name: str, loc: S3Location) -> str:
    """The URL every key of the source starts with. A configured endpoint is addressed path-style
    (MinIO, Ceph, R2 and AWS all accept it); AWS's own endpoint virtual-hosted, unless the bucket
    has a dot (a host name with dots would not match AWS's wildcard certificate)."""
    prefix = quote(loc.prefix, safe="/")
    if loc.endpoint_url:
        return f"{loc.endpoint_url}/{loc.bucket}/{prefix}"
    if "." in loc.bucket:
        return f"https://s3.{loc.region}.amazonaws.com/{loc.bucket}/{prefix}"
    return f"https://{loc.bucket}.s3.{loc.region}.amazonaws.com/{prefix}"


def _recordings_api(name: str, twilio: TwilioContext) -> Source:
    """The account's Twilio recordings API (Basic auth): a twilio-recording source's base, and where an s3
    source with private_keys reads its recordings' encryption details."""
    return Source(name=name, kind="twilio-recording", content_types=("application/json",),
                  base_url=f"{twilio.api_url}/2010-04-01/Accounts/{twilio.account_sid}/Recordings/",
                  auth=("basic", *twilio.auth))


@dataclass(frozen=True)
class TwilioContext:
    api_url: str
    account_sid: str
    auth: tuple[str, str] = field(repr=False)


def load_sources(path: str, env: Mapping[str, str], twilio: TwilioContext) -> dict[str, Source]:
    """Parse the sources file; any problem is one ConfigError line naming the file or the source."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"RESOLVER_SOURCES: cannot read {path}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"RESOLVER_SOURCES: {path} is not valid TOML: {e}") from e
    table = data.get("sources")
    if not isinstance(table, dict) or not table:
        raise ConfigError(f"RESOLVER_SOURCES: {path} defines no [sources.NAME] table")
    return {name: _source(name, raw, env, twilio) for name, raw in table.items()}
