"""The objects one app instance shares between requests, built once by `create_app`."""

from __future__ import annotations

from dataclasses import dataclass

import requests
from flask import current_app

from .access.flex_auth import TokenValidator
from .access.grants import Gate
from .access.signing import Signer
from .audit.log import AuditLog
from .config import Settings
from .store import Store
from .streaming.encrypted import EncryptedRecordings
from .streaming.upstream import Upstream
from .taskrouter.background import HookJobs


@dataclass
class Context:
    settings: Settings
    signer: Signer
    store: Store
    http: requests.Session
    validator: TokenValidator
    upstream: Upstream
    audit: AuditLog
    gate: Gate  # the access decisions, with the services above handed in
    recordings: EncryptedRecordings  # twilio-recording and s3 sources with private_keys
    hooks: HookJobs  # the TaskRouter hook's attaches, run after it answered

    def close(self) -> None:
        """Release sockets and files (tests and the demo build many apps in one process)."""
        self.hooks.close()  # first: their outcomes go to the audit log
        self.http.close()
        self.upstream.close()
        self.store.close()
        self.audit.close()


def ctx() -> Context:
    return current_app.extensions["resolver"]
