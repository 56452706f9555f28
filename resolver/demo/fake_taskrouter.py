"""A stand-in for TaskRouter's Task resource and the call-recordings listings of Twilio's REST API.

It keeps Twilio's conditional-update contract: every read and write answers with an `ETag`, a write with a
stale `If-Match` gets 412, and every write attempt is recorded. Tests make a concurrent writer by giving
`after_read` callbacks that change the task between the resolver's read and its write, or by writing from
other threads through the same HTTP API. `fail_next` injects error statuses (5xx, 429) one request at a time;
`delay` (every request) and `delay_next` (one request each) make it slow, as Twilio sometimes is.
Like TaskRouter, it holds at most `attributes_limit` (4096) characters of attributes: a longer write is a 400.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import Flask, jsonify, request

# Twilio answers an oversize Attributes with 400 and its error body. The exact code and wording could not be
# checked against Twilio (no account here; the error catalogue has no TaskRouter attributes-size entry that
# we could find): 20001 is Twilio's generic "invalid parameter" code, the sentence is ours. The resolver
# never relies on either: it refuses before writing, and only reads "attributes" and "size" in a 400.
OVERSIZE_CODE = 20001
OVERSIZE_MESSAGE = "Task Attributes exceed the maximum size of {limit} characters"


@dataclass
class FakeTask:
    sid: str
    workspace_sid: str
    attributes: str = "{}"
    assignment_status: str = "assigned"
    version: int = 0

    @property
    def etag(self) -> str:
        return f'"{self.version}"'


@dataclass
class FakeTaskRouter:
    account_sid: str
    credentials: set[tuple[str, str]]  # accepted (username, password) pairs for Basic auth
    tasks: dict[str, FakeTask] = field(default_factory=dict)  # task SID -> task
    recordings: dict[str, list[dict]] = field(default_factory=dict)  # CA... or CF... -> recording resources
    writes: list[dict] = field(default_factory=list)  # every POST to a task: if_match, attributes, status
    reads: list[str] = field(default_factory=list)  # every GET path
    after_read: list[Callable[[FakeTask], None]] = field(default_factory=list)  # popped, one per task GET
    fail_next: list[int] = field(default_factory=list)  # statuses to answer instead, one per request
    delay: float = 0.0  # seconds every request waits before it is answered
    delay_next: list[float] = field(default_factory=list)  # extra seconds, popped one per request
    refuse_closed_writes: bool = False  # answer 400 to writes on completed or canceled tasks
    attributes_limit: int = 4096  # TaskRouter's limit on a task's Attributes: a longer write is a 400
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_task(self, workspace_sid: str, task_sid: str, attributes: str,
                 status: str = "assigned") -> FakeTask:
        if len(attributes) > self.attributes_limit:
            raise ValueError("TaskRouter would not hold these attributes (over its size limit)")
        task = FakeTask(sid=task_sid, workspace_sid=workspace_sid, attributes=attributes,
                        assignment_status=status)
        self.tasks[task_sid] = task
        return task

    def set_attributes(self, task_sid: str, attributes: str) -> None:
        """A write by someone else (Flex, another integration): a new version, no ETag check."""
        with self.lock:
            task = self.tasks[task_sid]
            task.attributes = attributes
            task.version += 1

    def _authorized(self) -> bool:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Basic":
            return False
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return False
        return (user, password) in self.credentials

    @staticmethod
    def _error(status: int, code: int, message: str):  # type: ignore[no-untyped-def]
        return jsonify(code=code, message=message, more_info=f"https://www.twilio.com/docs/errors/{code}",
                       status=status), status

    def _resource(self, task: FakeTask) -> dict:
        return {
            "account_sid": self.account_sid,
            "workspace_sid": task.workspace_sid,
            "sid": task.sid,
            "attributes": task.attributes,
            "assignment_status": task.assignment_status,
            "age": 30,
            "priority": 0,
            "reason": None,
            "task_queue_sid": None,
            "workflow_sid": None,
            "url": f"https://taskrouter.twilio.com/v1/Workspaces/{task.workspace_sid}/Tasks/{task.sid}",
        }

    def app(self) -> Flask:
        app = Flask("fake_taskrouter")

        @app.before_request
        def _gate():  # type: ignore[no-untyped-def]
            with self.lock:
                injected = self.fail_next.pop(0) if self.fail_next else None
                wait = self.delay + (self.delay_next.pop(0) if self.delay_next else 0.0)
            if wait > 0:
                time.sleep(wait)
            if injected:
                return self._error(injected, 20500, "Injected failure")
            if not self._authorized():
                return self._error(401, 20003, "Authenticate")
            return None

        @app.route("/v1/Workspaces/<ws>/Tasks/<wt>", methods=["GET", "POST"])
        def task(ws: str, wt: str):  # type: ignore[no-untyped-def]
            with self.lock:
                found = self.tasks.get(wt)
                if found is None or found.workspace_sid != ws:
                    return self._error(404, 20404, f"The requested resource {request.path} was not found")
                if request.method == "GET":
                    self.reads.append(request.path)
                    resp = jsonify(self._resource(found))
                    resp.headers["ETag"] = found.etag
                    if self.after_read:
                        self.after_read.pop(0)(found)
                        found.version += 1
                    return resp
                attributes = request.form.get("Attributes")
                record: dict = {"task": wt, "if_match": request.headers.get("If-Match"), "attributes": attributes}
                self.writes.append(record)
                if found.assignment_status in ("completed", "canceled") and self.refuse_closed_writes:
                    record["status"] = 400
                    return self._error(400, 20001, "Task is not in a state that allows updates")
                if attributes is not None and len(attributes) > self.attributes_limit:
                    record["status"] = 400
                    return self._error(400, OVERSIZE_CODE, OVERSIZE_MESSAGE.format(limit=self.attributes_limit))
                if record["if_match"] is not None and record["if_match"] != found.etag:
                    record["status"] = 412
                    return self._error(412, 20412, "The task has been modified")
                if record["attributes"] is not None:
                    found.attributes = record["attributes"]
                found.version += 1
                record["status"] = 200
                resp = jsonify(self._resource(found))
                resp.headers["ETag"] = found.etag
                return resp

        def listing(parent: str):  # type: ignore[no-untyped-def]
            with self.lock:
                self.reads.append(request.path)
                items = [dict(r) for r in self.recordings.get(parent, [])]
            return jsonify(recordings=items, page=0, page_size=len(items), next_page_uri=None,
                           uri=request.path)

        @app.get("/2010-04-01/Accounts/<ac>/Calls/<ca>/Recordings.json")
        def call_recordings(ac: str, ca: str):  # type: ignore[no-untyped-def]
            if ac != self.account_sid:
                return self._error(404, 20404, "Not found")
            return listing(ca)

        @app.get("/2010-04-01/Accounts/<ac>/Conferences/<cf>/Recordings.json")
        def conference_recordings(ac: str, cf: str):  # type: ignore[no-untyped-def]
            if ac != self.account_sid:
                return self._error(404, 20404, "Not found")
            return listing(cf)

        return app


def recording(sid: str, *, call_sid: str | None = None, conference_sid: str | None = None, channels: int = 2,
              status: str = "completed", start_time: str = "Tue, 10 Mar 2026 10:00:00 +0000") -> dict:
    """A recording resource as Twilio's REST API lists it (the fields the resolver reads, and a few more)."""
    return {"sid": sid, "call_sid": call_sid, "conference_sid": conference_sid, "channels": channels,
            "status": status, "start_time": start_time, "duration": "42",
            "source": "StartConferenceRecordingAPI", "media_url": None}
