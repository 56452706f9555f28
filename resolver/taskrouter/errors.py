"""What can go wrong talking to TaskRouter, each with its HTTP meaning (codes in docs/http-api.md)."""

from __future__ import annotations

from ..errors import NotFound, ResolverError


class TaskNotFound(NotFound):
    code = "task_not_found"
    message = ("TaskRouter has no such task in this workspace "
               "(tasks are deleted about 5 minutes after they complete).")


class TaskClosed(ResolverError):
    status, code = 409, "task_closed"
    message = "The task is completed or canceled and TaskRouter refused to update it."


class TaskConflict(ResolverError):
    status, code = 409, "task_conflict"
    message = "The task kept changing while links were being attached; nothing was overwritten. Try again."


class AttributesUnparseable(ResolverError):
    status, code = 409, "attributes_unparseable"
    message = ("The task's attributes are not a JSON object the resolver can merge into safely "
               "(or conversations.media is not a list of objects); they were left untouched.")


class AttributesTooLarge(ResolverError):
    """TaskRouter holds at most ATTRIBUTES_LIMIT characters of attributes: refuse, never truncate."""

    status, code = 409, "attributes_too_large"
    message = ("The task's attributes with these media entries would exceed TaskRouter's limit of 4096 "
               "characters; nothing was written. Attach fewer entries or shorter titles.")

    @classmethod
    def sized(cls, size: int, limit: int) -> AttributesTooLarge:
        return cls(f"The task's attributes with these media entries would be {size} characters, over "
                   f"TaskRouter's limit of {limit}; nothing was written. Attach fewer entries or shorter titles.")


class NoRecordingSource(ResolverError):
    status, code = 409, "no_recording_source"
    message = ("The task has a call recording, but RESOLVER_SOURCES defines no twilio-recording source (or "
               "single s3 source) for it.")


class TwilioAuthFailed(ResolverError):
    status, code = 502, "twilio_auth_failed"
    message = ("Twilio rejected the resolver's credentials "
               "(check TWILIO_ACCOUNT_SID and the auth token or API key).")


class TwilioUnavailable(ResolverError):
    status, code = 502, "twilio_unavailable"
    message = "TaskRouter kept failing; the task may not have been updated. Attaching again is safe."


class TwilioTimeout(ResolverError):
    status, code = 504, "twilio_timeout"
    message = "TaskRouter did not answer in time; the task may not be updated. Attaching again is safe."


class TwilioRefused(ResolverError):
    status, code = 502, "twilio_refused"
    message = "TaskRouter refused the request."
