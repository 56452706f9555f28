"""Twilio resource SIDs: two letters that name the kind, then 32 lowercase hex digits. One table for all.

Every module that checks a SID imports its pattern from here; OpenAPI schemas use `schema_pattern`.
"""

from __future__ import annotations

import re

HEX32 = "[0-9a-f]{32}"

ACCOUNT_SID = re.compile("AC" + HEX32)
API_KEY_SID = re.compile("SK" + HEX32)
CALL_SID = re.compile("CA" + HEX32)
CONFERENCE_SID = re.compile("CF" + HEX32)
PUBLIC_KEY_SID = re.compile("CR" + HEX32)  # a Public Key resource (Voice Recording Encryption)
CONVERSATION_SID = re.compile("(CH|IS)" + HEX32)  # a Flex chat channel or a Conversations conversation
RECORDING_SID = re.compile("RE" + HEX32)
TASK_SID = re.compile("WT" + HEX32)
WORKER_SID = re.compile("WK" + HEX32)
WORKSPACE_SID = re.compile("WS" + HEX32)


def is_sid(pattern: re.Pattern[str], value: object) -> bool:
    """Whether `value` is a string that is exactly one SID of that kind."""
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def schema_pattern(pattern: re.Pattern[str]) -> str:
    """The same rule as a JSON Schema `pattern` (anchored: JSON Schema patterns search)."""
    return f"^{pattern.pattern}$"
