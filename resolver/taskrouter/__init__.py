"""TaskRouter: the REST client, merging media into task attributes, attaching links, the webhook signature.

`rest` talks to Twilio, `attributes` parses and rewrites task attributes, `attach` decides what to add and
audits it, `errors` says what went wrong, `signature` checks X-Twilio-Signature on the event hook.
"""

from .attach import CONFLICT_ATTEMPTS, Attacher, AttachResult, attach_audited
from .attributes import ATTRIBUTES_LIMIT, call_sids, epoch_ms, parse_attributes, transcript_sid, with_media
from .errors import (
    AttributesTooLarge,
    AttributesUnparseable,
    NoRecordingSource,
    TaskClosed,
    TaskConflict,
    TaskNotFound,
    TwilioAuthFailed,
    TwilioRefused,
    TwilioTimeout,
    TwilioUnavailable,
)
from .rest import BACKOFF, Task, TwilioRest, check_workspace_sid

__all__ = [
    "ATTRIBUTES_LIMIT", "AttributesTooLarge", "BACKOFF", "CONFLICT_ATTEMPTS",
    "AttachResult", "Attacher", "AttributesUnparseable", "NoRecordingSource",
    "Task", "TaskClosed", "TaskConflict", "TaskNotFound", "TwilioAuthFailed", "TwilioRefused", "TwilioRest",
    "TwilioTimeout", "TwilioUnavailable", "attach_audited", "call_sids", "check_workspace_sid", "epoch_ms",
    "parse_attributes", "transcript_sid", "with_media",
]
