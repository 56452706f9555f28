"""A stand-in for the parts of Twilio the resolver talks to: IAM token validation and call recordings.

It speaks the real protocol (paths, basic auth, JSON shapes, Range on media) so the resolver's real
`requests` code runs against it. State is plain Python data that tests and the demo set directly.

Encrypted recordings are made as Twilio's Voice Recording Encryption makes them: a random 256-bit content key
per recording, AES-256-GCM over the media with a random 12-byte IV and the 16-byte tag appended to the
ciphertext, the content key wrapped with RSAES-OAEP (SHA-256, MGF1-SHA-256) under the customer's public key,
and `encryption_details` (`type` rsa-aes, `public_key_sid`, `encrypted_cek`, `iv`, base64) on the recording
resource. They are served as wav only.
"""

from __future__ import annotations

import base64
import io
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from flask import Flask, abort, jsonify, request, send_file

OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def encrypt_recording(plaintext: bytes, public_key: rsa.RSAPublicKey, public_key_sid: str) -> tuple[bytes, dict]:
    """(media bytes = ciphertext || tag, encryption_details) exactly as Twilio stores an encrypted recording."""
    cek, iv = AESGCM.generate_key(bit_length=256), os.urandom(12)
    body = AESGCM(cek).encrypt(iv, plaintext, None)  # the 16-byte tag comes appended
    details = {
        "type": "rsa-aes",
        "public_key_sid": public_key_sid,
        "encrypted_cek": base64.b64encode(public_key.encrypt(cek, OAEP)).decode(),
        "iv": base64.b64encode(iv).decode(),
    }
    return body, details


def escaped_identity(name: str) -> str:
    """Twilio's escaped form of a user name, as IAM's `identity` carries it: every character outside
    [A-Za-z0-9] becomes `_` and its UTF-8 bytes in upper-case hex (user@example.com -> user_40example_2Ecom).

    From Twilio's samples (twilio-flex-token-validator's README: realm_user_id "user@example.com", identity
    "user_40example_2Dcom"): `@` is `_40` there as here; the sample's `_2D` for the dot is not the dot's code
    (0x2E) and could not be checked against a live account. The resolver never derives one name from the
    other: it keeps and compares both as IAM sends them, so nothing depends on this rule but the fake."""
    return "".join(c if c.isascii() and c.isalnum() else "".join(f"_{b:02X}" for b in c.encode()) for c in name)


@dataclass
class FlexUser:
    """A Flex user as IAM describes them. `realm_user_id` is the name the identity provider gives (an SSO
    email, or a Flex login); `identity` is Twilio's escaped form of it unless given (odd shapes for tests)."""

    realm_user_id: str
    roles: list[str]
    worker_sid: str | None = "WK" + "0" * 32
    expires_at: float = field(default_factory=lambda: time.time() + 3600)
    account_sid: str | None = None  # real IAM answers carry none; set only to test the resolver's check
    identity: str | None = None  # None: escaped_identity(realm_user_id)
    flex_user_sid: str = "FU" + "0" * 32
    flex_instance_sid: str = "GO" + "0" * 32

    @property
    def iam_identity(self) -> str:
        return self.identity if self.identity is not None else escaped_identity(self.realm_user_id)


@dataclass
class FakeTwilio:
    account_sid: str
    auth_token: str
    tokens: dict[str, FlexUser] = field(default_factory=dict)
    recordings: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # "RE...": (body, content type)
    encryption: dict[str, dict] = field(default_factory=dict)  # "RE...": encryption_details (encrypted ones)
    external: set[str] = field(default_factory=set)  # "RE...": media in the customer's bucket (resource only)
    resource_requests: list[str] = field(default_factory=list)  # SIDs whose recording resource was read
    validations: list[str] = field(default_factory=list)  # every token submitted, in order
    media_requests: list[dict] = field(default_factory=list)
    iam_delay: float = 0.0
    iam_status: int | None = None  # force an error status from IAM
    answers: dict[str, dict] = field(default_factory=dict)  # token -> an IAM answer sent as it is (odd shapes)
    invalid_status: int = 200  # the HTTP status of a `valid: false` answer
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_encrypted(self, sid: str, plaintext: bytes, public_key: rsa.RSAPublicKey, public_key_sid: str) -> None:
        """Hold `plaintext` as an encrypted recording (wav), as Twilio would with that public key."""
        body, details = encrypt_recording(plaintext, public_key, public_key_sid)
        with self.lock:
            self.recordings[sid] = (body, "audio/x-wav")
            self.encryption[sid] = details

    def add_external(self, sid: str, plaintext: bytes, public_key: rsa.RSAPublicKey, public_key_sid: str) -> bytes:
        """An encrypted recording written to external storage: Twilio keeps only the resource (with its
        `encryption_details`) and serves no media; the returned ciphertext is what goes into the bucket."""
        body, details = encrypt_recording(plaintext, public_key, public_key_sid)
        with self.lock:
            self.external.add(sid)
            self.encryption[sid] = details
        return body

    def resource(self, account_sid: str, sid: str) -> dict:
        """The recording resource as the REST API shows it (the fields the resolver reads, and a few more)."""
        uri = f"/2010-04-01/Accounts/{account_sid}/Recordings/{sid}.json"
        return {
            "account_sid": account_sid, "api_version": "2010-04-01", "call_sid": "CA" + "0" * 32,
            "sid": sid, "status": "completed", "channels": 1, "source": "RecordVerb", "duration": "15",
            "date_created": "Thu, 01 Jan 2026 00:00:00 +0000", "uri": uri,
            "media_url": f"{getattr(self, 'url', '')}{uri[:-5]}",
            "encryption_details": self.encryption.get(sid),
        }

    def authorized(self) -> bool:
        expected = "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return request.headers.get("Authorization") == expected

    def app(self) -> Flask:
        app = Flask("fake_twilio")

        @app.post("/v1/Accounts/<account_sid>/Tokens/validate")
        def validate(account_sid: str):  # type: ignore[no-untyped-def]
            token = (request.get_json(silent=True) or {}).get("token", "")
            with self.lock:
                self.validations.append(token)  # as submitted, before any delay
            if self.iam_delay:
                time.sleep(self.iam_delay)
            if self.iam_status:
                return jsonify(code=20500, message="Internal error", status=self.iam_status), self.iam_status
            if not self.authorized():
                return jsonify(code=20003, message="Authenticate", status=401), 401
            if account_sid != self.account_sid:
                return jsonify(code=20404, message="The requested resource was not found", status=404), 404
            if token in self.answers:
                return jsonify(self.answers[token])
            user = self.tokens.get(token)
            if user is None or user.expires_at <= time.time():
                # IAM's verdict on a bad token is the body (`valid: false`, a code and a message); the HTTP
                # status of that answer could not be checked against a live account (the resolver reads the body)
                return jsonify(code=20101, valid=False, message="Invalid Access Token", expiration=None,
                               realm_user_id=None, identity=None, roles=None, worker_sid=None), self.invalid_status
            # the shape of twilio-flex-token-validator's "Token Result" (valid, code, message, expiration with
            # milliseconds and Z, realm_user_id, escaped identity, roles, worker_sid), plus the Flex user and
            # instance SIDs that newer answers carry; no account_sid
            answer = {
                "valid": True,
                "code": 0,
                "message": None,
                "expiration": datetime.fromtimestamp(user.expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
                + "Z",
                "realm_user_id": user.realm_user_id,
                "identity": user.iam_identity,
                "roles": user.roles,
                "worker_sid": user.worker_sid,
                "flex_user_sid": user.flex_user_sid,
                "flex_instance_sid": user.flex_instance_sid,
            }
            if user.account_sid:
                answer["account_sid"] = user.account_sid
            return jsonify(answer)

        @app.get("/2010-04-01/Accounts/<account_sid>/Recordings.json")
        def recording_list(account_sid: str):  # type: ignore[no-untyped-def]
            """One page of the recordings list (what `resolver check` reads to test the credentials)."""
            if not self.authorized():
                return jsonify(code=20003, message="Authenticate", status=401), 401
            if account_sid != self.account_sid:
                abort(404)
            sids = sorted(self.recordings)[: int(request.args.get("PageSize", "50"))]
            return jsonify(recordings=[{"sid": sid, "account_sid": account_sid} for sid in sids],
                           page=0, page_size=len(sids))

        @app.get("/2010-04-01/Accounts/<account_sid>/Recordings/<name>")
        def recording(account_sid: str, name: str):  # type: ignore[no-untyped-def]
            with self.lock:
                self.media_requests.append(
                    {"path": request.path, "args": dict(request.args), "range": request.headers.get("Range"),
                     "authorized": self.authorized()}
                )
            if not self.authorized():
                return jsonify(code=20003, message="Authenticate", status=401), 401
            sid, _, ext = name.partition(".")
            if account_sid != self.account_sid or sid not in self.recordings and (
                    sid not in self.external or ext != "json"):
                abort(404)
            if ext == "json":
                with self.lock:
                    self.resource_requests.append(sid)
                return jsonify(self.resource(account_sid, sid))
            if sid in self.encryption and ext != "wav":
                abort(404)  # encrypted recordings exist as wav only
            body, content_type = self.recordings[sid]
            resp = send_file(io.BytesIO(body), mimetype=content_type, conditional=True, etag=f"{sid}-{len(body)}",
                             last_modified=datetime(2026, 1, 1, tzinfo=UTC), max_age=None)
            return resp

        return app
