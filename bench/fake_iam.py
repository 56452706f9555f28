"""The fake Twilio (IAM token validation, recordings) in a child process of the bench, with a counter route.

It runs outside the bench process so that the load generator's GIL never slows token validation down.
Tokens come from a JSON file `{"token": "identity", ...}` (all supervisors); `GET /_bench/validations`
answers how many validation calls each token caused. Prints `PORT <n>` once listening.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

from flask import jsonify

from resolver.demo.fake_twilio import FakeTwilio, FlexUser
from resolver.demo.server import ServerThread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--account-sid", required=True)
    parser.add_argument("--auth-token", required=True)
    parser.add_argument("--tokens", required=True, help="JSON file: {token: identity}")
    parser.add_argument("--iam-delay", type=float, default=0.0, help="seconds each validation takes")
    args = parser.parse_args()
    fake = FakeTwilio(account_sid=args.account_sid, auth_token=args.auth_token, iam_delay=args.iam_delay)
    with open(args.tokens) as f:
        for token, identity in json.load(f).items():
            fake.tokens[token] = FlexUser(identity=identity, roles=["supervisor"])
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
