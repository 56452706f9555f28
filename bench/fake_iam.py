"""The fake Twilio (IAM token validation, recordings) in a child process of the bench, with a counter route.

It runs outside the bench process so that the load generator's GIL never slows token validation down.
Tokens come from a JSON file `{"token": "identity", ...}` (all supervisors); `GET /_bench/validations`
answers how many validation calls each token caused. Prints `PORT <n>` once listening.

With `--recording-bytes N` it also holds two recordings of N bytes each: `PLAIN_SID` as it is, and
`ENCRYPTED_SID` (the same bytes) encrypted as Twilio's Voice Recording Encryption does, for the public key in
`--recording-public-key` under the SID `--recording-key-sid` (measure 6).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

from cryptography.hazmat.primitives.serialization import load_pem_public_key
from flask import jsonify

from resolver.demo.fake_twilio import FakeTwilio, FlexUser
from resolver.demo.server import ServerThread

PLAIN_SID = "RE" + "0a" * 16
ENCRYPTED_SID = "RE" + "0e" * 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--account-sid", required=True)
    parser.add_argument("--auth-token", required=True)
    parser.add_argument("--tokens", required=True, help="JSON file: {token: identity}")
    parser.add_argument("--iam-delay", type=float, default=0.0, help="seconds each validation takes")
    parser.add_argument("--recording-bytes", type=int, default=0, help="size of the plain/encrypted pair")
    parser.add_argument("--recording-public-key", default="", help="PEM file of the recording public key")
    parser.add_argument("--recording-key-sid", default="")
    args = parser.parse_args()
    fake = FakeTwilio(account_sid=args.account_sid, auth_token=args.auth_token, iam_delay=args.iam_delay)
    if args.recording_bytes:
        body = bytes(range(256)) * (args.recording_bytes // 256)
        fake.recordings[PLAIN_SID] = (body, "audio/x-wav")
        with open(args.recording_public_key, "rb") as f:
            public = load_pem_public_key(f.read())
        fake.add_encrypted(ENCRYPTED_SID, body, public, args.recording_key_sid)  # type: ignore[arg-type]
    with open(args.tokens) as f:
        for token, identity in json.load(f).items():
            fake.tokens[token] = FlexUser(realm_user_id=identity, roles=["supervisor"])
    app = fake.app()

    @app.get("/_bench/validations")
    def validations():  # type: ignore[no-untyped-def]
        with fake.lock:
            return jsonify(Counter(fake.validations))

    server = ServerThread(app)
    print(f"PORT {server.port}", flush=True)
    server.server.serve_forever()


if __name__ == "__main__":
    main()
