"""The few TaskRouter and REST calls attach needs: retried with backoff, every failure a domain error."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import requests

from ..config import Settings
from ..errors import BadRequest, ResolverError
from ..twilio_ids import CALL_SID, CONFERENCE_SID, WORKSPACE_SID
from .errors import (
    AttributesTooLarge,
    TaskClosed,
    TaskNotFound,
    TwilioAuthFailed,
    TwilioRefused,
    TwilioTimeout,
    TwilioUnavailable,
)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
BACKOFF = (0.25, 0.5, 1.0)  # waits before the 2nd, 3rd and 4th try of a failing Twilio call
TIMEOUT = (3.05, 10.0)  # TaskRouter waits at most 15 s for an event callback's answer
CLOSED = frozenset({"completed", "canceled"})


def check_workspace_sid(sid: object) -> str:
    if not isinstance(sid, str) or not WORKSPACE_SID.fullmatch(sid):
        raise BadRequest("workspace_sid must be a TaskRouter workspace SID (WS + 32 hex digits).",
                         code="bad_workspace_sid")
    return sid


@dataclass(frozen=True)
class Task:
    sid: str
    workspace_sid: str
    status: str
    attributes: str
    etag: str


class TwilioRest:
    """The few TaskRouter and REST calls attach needs, with retries; every failure is a domain error."""

    def __init__(self, settings: Settings, http: requests.Session, *,
                 sleep: Callable[[float], None] = time.sleep, backoff: Sequence[float] = BACKOFF,
                 deadline: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.http = http
        self.sleep = sleep
        self.backoff = tuple(backoff)
        self.deadline = deadline  # a `clock()` time no call may run past (the hook's background attach)
        self.clock = clock

    def _timeout(self) -> tuple[float, float]:
        """TIMEOUT, cut to what is left before the deadline; TwilioTimeout when nothing is left."""
        if self.deadline is None:
            return TIMEOUT
        left = self.deadline - self.clock()
        if left <= 0:
            raise TwilioTimeout()
        return (min(TIMEOUT[0], left), min(TIMEOUT[1], left))

    def _call(self, method: str, url: str, **kwargs: object) -> requests.Response:
        for wait in (*self.backoff, None):
            cause: Exception | None = None
            timeout = self._timeout()
            try:
                resp = self.http.request(method, url, auth=self.settings.twilio_auth, timeout=timeout,
                                         allow_redirects=False, **kwargs)  # type: ignore[arg-type]
            except requests.Timeout as e:
                error: ResolverError = TwilioTimeout()
                cause = e
            except requests.RequestException as e:
                error, cause = TwilioUnavailable(), e
            else:
                if resp.status_code in (401, 403):
                    raise TwilioAuthFailed()
                if resp.status_code not in RETRY_STATUSES:
                    return resp
                error = TwilioUnavailable()
            if wait is None or (self.deadline is not None and self.clock() + wait >= self.deadline):
                raise error from cause
            self.sleep(wait)
        raise AssertionError("unreachable")

    def _task_url(self, workspace_sid: str, task_sid: str) -> str:
        return f"{self.settings.taskrouter_url}/v1/Workspaces/{workspace_sid}/Tasks/{task_sid}"

    def fetch_task(self, workspace_sid: str, task_sid: str) -> Task:
        resp = self._call("GET", self._task_url(workspace_sid, task_sid))
        if resp.status_code == 404:
            raise TaskNotFound()
        body = _json(resp) if resp.status_code == 200 else None
        etag = resp.headers.get("ETag")
        if not isinstance(body, dict) or not isinstance(body.get("attributes"), str) or not etag:
            raise TwilioRefused("TaskRouter's answer for the task was not a task with a version (ETag).")
        if body.get("sid") != task_sid or body.get("account_sid", self.settings.account_sid) != (
                self.settings.account_sid):
            raise TwilioRefused("TaskRouter answered with a different task or account.")
        return Task(sid=task_sid, workspace_sid=workspace_sid, status=str(body.get("assignment_status", "")),
                    attributes=body["attributes"], etag=etag)

    def write_attributes(self, task: Task, attributes: str) -> bool:
        """Write if the task is still the version we read; False when someone else wrote first (412)."""
        url = self._task_url(task.workspace_sid, task.sid)
        resp = self._call("POST", url, data={"Attributes": attributes}, headers={"If-Match": task.etag})
        if resp.status_code == 412:
            return False
        if resp.status_code == 404:
            raise TaskNotFound()
        if 400 <= resp.status_code < 500 and task.status in CLOSED:
            raise TaskClosed()
        if resp.status_code == 400 and _says_too_large(resp):
            # attach checks ATTRIBUTES_LIMIT first; this is TaskRouter counting differently than we do
            raise AttributesTooLarge("TaskRouter refused the task's new attributes as too large; nothing was written.")
        if resp.status_code != 200:
            raise TwilioRefused(f"TaskRouter refused the update (HTTP {resp.status_code}).")
        return True

    def recordings(self, parent_sid: str) -> list[dict]:
        """Recordings of a call (CA...) or a conference (CF...), as Twilio lists them (first 100)."""
        kind = "Calls" if CALL_SID.fullmatch(parent_sid) else "Conferences"
        if not (CALL_SID.fullmatch(parent_sid) or CONFERENCE_SID.fullmatch(parent_sid)):
            raise BadRequest("Not a call or conference SID.", code="bad_call_sid")
        account = f"{self.settings.api_url}/2010-04-01/Accounts/{self.settings.account_sid}"
        url = f"{account}/{kind}/{parent_sid}/Recordings.json"
        resp = self._call("GET", url, params={"PageSize": 100})
        if resp.status_code == 404:
            return []
        body = _json(resp) if resp.status_code == 200 else None
        if not isinstance(body, dict) or not isinstance(body.get("recordings"), list):
            raise TwilioRefused(f"Twilio refused to list the call's recordings (HTTP {resp.status_code}).")
        return [r for r in body["recordings"] if isinstance(r, dict)]


def _says_too_large(resp: requests.Response) -> bool:
    """A 400 whose Twilio error body is about the size of the attributes."""
    body = _json(resp)
    message = str(body.get("message", "")).lower() if isinstance(body, dict) else ""
    return "attributes" in message and any(w in message for w in ("4096", "size", "long", "large", "exceed"))


def _json(resp: requests.Response) -> object:
    try:
        return resp.json()
    except ValueError:
        return None
