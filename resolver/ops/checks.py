"""Pre-flight checks for operators: configuration, shared store, audit log, Twilio and every source.

Each check returns `Result`s with a level (ok, warn, fail), what was found and what to do about it. The
texts are written here from fixed phrases and public facts (host names, status codes), never from an
exception's text or a response body, so a report cannot echo a credential.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from ..config import Settings
from ..sources import REGION, Source
from ..store import StoreError, open_store
from ..streaming import pooling, s3
from ..streaming.upstream import new_session  # the app's own: no proxy or .netrc, the environment's CAs

OK, WARN, FAIL = "ok", "warn", "FAIL"
DUMMY_TOKEN = "resolver-check-not-a-token"  # noqa: S105  # nosec B105 - a deliberately invalid token


@dataclass(frozen=True)
class Result:
    level: str
    name: str
    detail: str
    fix: str = ""


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def _network_problem(name: str, url: str, err: requests.RequestException, fix: str) -> Result:
    host = _where(url)
    if isinstance(err, requests.exceptions.SSLError):
        return Result(FAIL, name, f"TLS: the certificate of {host} is not valid for it or not trusted",
                      "use a certificate that names this host from a CA this resolver trusts (a public one, or "
                      "name yours in REQUESTS_CA_BUNDLE: README, Outbound TLS), or fix the clock")
    if isinstance(err, requests.Timeout):
        return Result(FAIL, name, f"{host} did not answer in time", fix)
    return Result(FAIL, name, f"cannot connect to {host}", fix)


def check_dns(name: str, url: str) -> Result | None:
    """None when the host resolves; a FAIL naming the host when it does not."""
    parts = urlsplit(url)
    try:
        socket.getaddrinfo(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
    except (OSError, UnicodeError):
        return Result(FAIL, name, f"DNS: cannot resolve {parts.hostname}",
                      "check the host name in the URL and this machine's DNS")
    return None


def check_store(settings: Settings) -> Result:
    kind = settings.store_url.split(":", 1)[0]
    try:
        open_store(settings.store_url).ping()
    except (StoreError, OSError, ValueError):
        return Result(FAIL, "store", f"the {kind} store does not answer",
                      "check RESOLVER_STORE (sqlite:///PATH writable, or a reachable redis://HOST:PORT/DB)")
    return Result(OK, "store", f"the {kind} store answers")


def check_audit_log(settings: Settings) -> Result:
    target = settings.audit_log
    if target == "-":
        return Result(OK, "audit log", "audit records go to stdout (ship them off the box with the logs)")
    directory = os.path.dirname(os.path.abspath(target))
    writable = os.access(target, os.W_OK) if os.path.exists(target) else os.access(directory, os.W_OK)
    if not writable:
        return Result(FAIL, "audit log", f"cannot append to {target}",
                      "make RESOLVER_AUDIT_LOG a writable file path (the directory must exist), or '-'")
    return Result(OK, "audit log", f"audit records go to {target}")


def check_trust(env: Mapping[str, str] = os.environ) -> Result:
    """Which CAs outbound TLS verifies with (pooling.env_trust), and any variable naming nothing readable."""
    named = pooling.named_cas(env)
    if not named:
        return Result(OK, "outbound tls", "certificates are verified against requests' CA bundle (certifi)")
    _, unread = pooling.load_named(named)
    read = [name for name, _ in named if name not in unread]
    fix = "point each at a readable PEM bundle (SSL_CERT_DIR: a directory of hashed links), or unset it"
    if not read:
        return Result(FAIL, "outbound tls", f"no CA is trusted: {', '.join(unread)} name nothing readable, so "
                      "every HTTPS call fails", fix)
    detail = "certificates are verified against the CAs named by " + ", ".join(read)
    if unread:
        return Result(WARN, "outbound tls", f"{detail}; {', '.join(unread)} name nothing readable (skipped)", fix)
    return Result(OK, "outbound tls", detail)


def check_iam(settings: Settings, http: requests.Session, timeout: float) -> Result:
    """Validate a dummy token: an answer of valid=false proves reachability and accepted credentials."""
    name = "twilio iam"
    url = f"{settings.iam_url}/v1/Accounts/{settings.account_sid}/Tokens/validate"
    creds_fix = ("check TWILIO_AUTH_TOKEN (or TWILIO_API_KEY/TWILIO_API_SECRET) and that they belong to "
                 "TWILIO_ACCOUNT_SID")
    problem = check_dns(name, url)
    if problem:
        return problem
    try:
        resp = http.post(url, json={"token": DUMMY_TOKEN}, auth=settings.twilio_auth, timeout=timeout,
                         allow_redirects=False)
    except requests.RequestException as e:
        return _network_problem(name, url, e, "check TWILIO_IAM_URL and outbound HTTPS to it")
    if resp.status_code in (401, 403):
        return Result(FAIL, name, f"Twilio rejected the credentials ({resp.status_code})", creds_fix)
    if resp.status_code == 404:
        return Result(FAIL, name, "Twilio does not know this account with these credentials (404)", creds_fix)
    try:
        answer = resp.json()
    except ValueError:
        answer = None
    if resp.status_code != 200 or not isinstance(answer, dict) or "valid" not in answer:
        return Result(FAIL, name, f"token validation answered {resp.status_code} without a verdict",
                      "check TWILIO_IAM_URL points at Twilio's IAM API")
    return Result(OK, name, "token validation reached; the credentials were accepted")


def _probe(
    http: requests.Session, url: str, auth: tuple[str, ...] | None, timeout: float
) -> requests.Response:
    headers, basic = {}, None
    if auth and auth[0] == "bearer":
        headers["Authorization"] = f"Bearer {auth[1]}"
    elif auth and auth[0] == "basic":
        basic = (auth[1], auth[2])
    resp = http.head(url, headers=headers, auth=basic, timeout=timeout, allow_redirects=False)
    if resp.status_code in (405, 501):  # HEAD not supported: ask for the first byte instead
        resp = http.get(url, headers={**headers, "Range": "bytes=0-0"}, auth=basic, timeout=timeout,
                        allow_redirects=False, stream=True)
        resp.close()
    return resp


S3_PROBE_KEY = "resolver-check-no-such-object"  # a GET of a missing key: reaches bucket, region and signature


def check_s3_source(source: Source, http: requests.Session, timeout: float,
                    signer: s3.S3Signer | None = None) -> Result:
    """A signed GET of a missing object under the prefix: 404 NoSuchKey proves credentials, region and bucket
    (a HEAD would answer errors without a body, so without S3's error code). Never prints a secret."""
    name, loc = f"source {source.name}", source.s3
    if loc is None:
        raise TypeError(f"source {source.name} is not an s3 source")
    signer = signer or s3.S3Signer()
    where = f"s3 bucket {loc.bucket} at {_where(source.base_url)}"
    creds_fix = (f"check the variables named in credentials of sources.{source.name}" if loc.keys else
                 f"set credentials of sources.{source.name}, or AWS's chain (AWS_ACCESS_KEY_ID/"
                 "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, a container or instance role)")
    try:
        signer.credentials(source)
    except s3.NoCredentials:
        return Result(FAIL, name, "no AWS credentials: none configured and AWS's standard chain found none",
                      creds_fix)
    url = source.base_url + S3_PROBE_KEY
    problem = check_dns(name, url)
    if problem:
        return problem
    headers = signer.signed_headers(source, url, {"Range": "bytes=0-0"})
    try:
        resp = http.get(url, headers=headers, timeout=timeout, allow_redirects=False, stream=True)
        body = resp.raw.read(s3.MAX_ERROR_BODY, decode_content=False) or b""
        resp.close()
    except requests.RequestException as e:
        return _network_problem(name, url, e, f"check endpoint_url and region of sources.{source.name} and "
                                "outbound HTTPS to the store")
    code, status = s3.error_code(body), resp.status_code
    actual = resp.headers.get("x-amz-bucket-region", "")
    region_fix = f"set region of sources.{source.name} to the bucket's region"
    if actual and REGION.fullmatch(actual) and actual != loc.region:
        return Result(FAIL, name, f"{where}: wrong region: the bucket is in {actual}, not {loc.region}",
                      region_fix)
    if status == 404 and code in ("NoSuchKey", ""):
        return Result(OK, name, f"{where} answers with the configured credentials (a missing object is 404)")
    if status in (200, 206):
        return Result(OK, name, f"{where} answers with the configured credentials")
    meaning = s3.MEANING.get(code, "")
    if code == "NoSuchBucket":
        return Result(FAIL, name, f"{where}: the bucket does not exist (404 NoSuchBucket)",
                      f"check bucket (and endpoint_url) of sources.{source.name}")
    if code == "AccessDenied":
        return Result(WARN, name, f"{where}: access denied for a missing object (403 AccessDenied): the "
                      "credentials may not read here, or may read but not list (then missing media is a 502)",
                      f"grant s3:GetObject on arn:aws:s3:::{loc.bucket}/{loc.prefix}* (and s3:ListBucket on "
                      "the bucket, so a missing object is a 404)")
    if "region" in meaning or status in (301, 307):
        return Result(FAIL, name, f"{where}: wrong region ({status} {code or 'redirect'})", region_fix)
    detail = f"{where} refused the request ({status} {code or 'without an error code'})"
    if meaning:
        detail += f": {meaning}"
    return Result(FAIL, name, detail, creds_fix if status in (400, 401, 403) else
                  f"check the settings of sources.{source.name}")


def check_source(source: Source, settings: Settings, http: requests.Session, timeout: float) -> Result:
    if source.kind == "s3":
        return check_s3_source(source, http, timeout)
    name = f"source {source.name}"
    url = source.base_url
    if source.kind == "twilio-recording":
        url = f"{settings.api_url}/2010-04-01/Accounts/{settings.account_sid}/Recordings.json?PageSize=1"
    fix = f"check base_url of sources.{source.name} and outbound HTTPS to it"
    if source.kind == "twilio-recording":
        fix = "check TWILIO_API_URL and outbound HTTPS to it"
    problem = check_dns(name, url)
    if problem:
        return problem
    try:
        status = _probe(http, url, source.auth, timeout).status_code
    except requests.RequestException as e:
        return _network_problem(name, url, e, fix)
    where = _where(url)
    if source.kind == "redirect":
        level = FAIL if status >= 500 else OK
        return Result(level, name, f"{where} answers ({status}); users log in there themselves",
                      fix if level == FAIL else "")
    if status in (401, 403):
        fix = (f"check the auth settings of sources.{source.name} (the variables they name)" if source.auth
               else f"add auth to sources.{source.name}")
        if source.kind == "twilio-recording":
            fix = "check TWILIO_AUTH_TOKEN or TWILIO_API_KEY/TWILIO_API_SECRET"
        return Result(FAIL, name, f"{where} refused the credentials ({status})", fix)
    if status >= 500:
        return Result(FAIL, name, f"{where} failed ({status})", fix)
    if status == 404 and source.kind == "http":
        return Result(WARN, name, f"{where} answered 404 for base_url (normal for stores without a listing)",
                      "check base_url if media cannot be fetched")
    if status >= 400:
        return Result(FAIL, name, f"{where} answered {status}", fix)
    return Result(OK, name, f"{where} answers ({status}) with the configured credentials")


def check_recording_keys(source: Source) -> Result:
    """Each configured private key loaded at start-up (config); here each also unwraps a value wrapped with
    its own public key (RSA-OAEP-SHA256, as Twilio wraps content keys), and the SIDs it serves are named."""
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    name = f"keys {source.name}"
    probe = os.urandom(32)
    usable = []
    for sid, key in source.private_keys:
        if key.decrypt(key.public_key().encrypt(probe, oaep), oaep) != probe:
            return Result(FAIL, name, f"the key for {sid} does not unwrap what its public key wraps",
                          f"replace the key named for {sid} in sources.{source.name}.private_keys")
        usable.append(f"{sid} (RSA {key.key_size})")
    return Result(OK, name, "can decrypt recordings encrypted for " + ", ".join(usable))


def run_checks(settings: Settings, *, timeout: float = 5.0,
               http: requests.Session | None = None) -> Iterator[Result]:
    """Every check, in the order an operator would fix them."""
    http = http or new_session()
    steps: list[Callable[[], Result]] = [
        lambda: check_store(settings),
        lambda: check_audit_log(settings),
        check_trust,
        lambda: check_iam(settings, http, timeout),
    ]
    steps += [lambda s=s: check_source(s, settings, http, timeout) for s in settings.sources.values()]
    steps += [lambda s=s: check_recording_keys(s) for s in settings.sources.values() if s.private_keys]
    if not settings.sources:
        steps.append(lambda: Result(WARN, "sources", "no sources configured: no media can be served",
                                    "set RESOLVER_SOURCES to a sources file (TOML)"))
    for step in steps:
        yield step()
