"""A stand-in for the parts of Twilio the resolver talks to: IAM token validation and call recordings.

It speaks the real protocol (paths, basic auth, JSON shapes, Range on media) so the resolver's real
`requests` code runs against it. State is plain Python data that tests and the demo set directly.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from flask import Flask, abort, jsonify, request, send_file


@dataclass
class FlexUser:
    identity: str
    roles: list[str]
    worker_sid: str | None = "WK" + "0" * 32
    expires_at: float = field(default_factory=lambda: time.time() + 3600)
    account_sid: str | None = None  # None: the account the fake serves


@dataclass
class FakeTwilio:
    account_sid: str
    auth_token: str
    tokens: dict[str, FlexUser] = field(default_factory=dict)
    recordings: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # "RE...": (body, content type)
    validations: list[str] = field(default_factory=list)  # every token submitted, in order
    media_requests: list[dict] = field(default_factory=list)
    iam_delay: float = 0.0
    iam_status: int | None = None  # force an error status from IAM
    answers: dict[str, dict] = field(default_factory=dict)  # token -> an IAM answer sent as it is (odd shapes)
    lock: threading.Lock = field(default_factory=threading.Lock)

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
                return jsonify(code=20101, valid=False, message="Invalid Access Token", identity=None,
                               roles=None, worker_sid=None, expiration=None, realm_user_id=None)
            answer = {
                "code": 0,
                "valid": True,
                "message": None,
                "identity": user.identity,
                "roles": user.roles,
                "worker_sid": user.worker_sid,
                "realm_user_id": None,
                "expiration": datetime.fromtimestamp(user.expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
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
            if account_sid != self.account_sid or sid not in self.recordings:
                abort(404)
            body, content_type = self.recordings[sid]
            resp = send_file(io.BytesIO(body), mimetype=content_type, conditional=True, etag=f"{sid}-{len(body)}",
                             last_modified=datetime(2026, 1, 1, tzinfo=UTC), max_age=None)
            return resp

        return app
