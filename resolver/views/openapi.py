"""The OpenAPI 3.1 description of the HTTP API (docs/http-api.md), served at /api/v1/openapi.json.

Built from data here so it states exactly the documented status codes and error shape;
`tests/views/test_openapi.py` runs schemathesis against a live gunicorn with it, so a response the document
does not describe fails the build.
It names no secret and no upstream: only our own public URL.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from .. import policy
from ..access.links import MAX_ENTRIES, MAX_TITLE, TYPES
from ..twilio_ids import CONVERSATION_SID, TASK_SID, WORKSPACE_SID, schema_pattern

JSON = "application/json"
SID = {"task": schema_pattern(TASK_SID), "conversation": schema_pattern(CONVERSATION_SID)}
TOKEN = {"type": "string", "minLength": 1, "maxLength": 4096}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """An error answer: the documented JSON shape, or a small HTML page for a browser navigation."""
    resp: dict[str, Any] = {
        "description": description,
        "content": {JSON: {"schema": _ref("Error")}, "text/html": {"schema": {"type": "string"}}},
    }
    if headers:
        resp["headers"] = headers
    return resp


ERRORS: dict[str, dict[str, Any]] = {
    "400": _error("Malformed request."),
    "401": _error("No or invalid Flex token (or service key); Twilio says the token is not valid."),
    "403": _error("Valid user without an allowed role, from another account or without a worker; a bad or "
                  "expired grant; a revoked link or grant; a foreign Origin."),
    "404": _error("A link that does not verify or names an unknown source (the same answer for both); "
                  "media no longer at its store; service endpoints when no service key is configured."),
    "405": _error("Another method.", {"Allow": {"schema": {"type": "string"}, "required": True}}),
    "409": _error("The task is closed (task_closed), changed meanwhile (task_conflict), its attributes cannot be "
                  "merged (attributes_unparseable) or would exceed TaskRouter's 4096 characters "
                  "(attributes_too_large; nothing is written, never truncated)."),
    "413": _error("The request body is over the endpoint's limit (refused before it is read)."),
    "414": _error("The request line is longer than the server accepts (gunicorn's limit, before the app)."),
    "416": _error("Unsatisfiable range."),
    "429": _error("Rate limited.", {"Retry-After": {"schema": {"type": "string", "pattern": r"^[0-9]+$"},
                                                    "required": True}}),
    "502": _error("The upstream failed."),
    "503": _error("Twilio's token validation is unreachable (fail closed: no grant); on the TaskRouter hook, "
                  "hook_busy (too many attaches running)."),
    "504": _error("The upstream timed out."),
}


def errors(*codes: int) -> dict[str, dict[str, Any]]:
    return {str(c): ERRORS[str(c)] for c in codes}


SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {"error": {
            "type": "object",
            "required": ["code", "message"],
            "additionalProperties": False,
            "properties": {"code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
                           "message": {"type": "string", "minLength": 1}},
        }},
    },
    "Health": {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}},
    "MediaSpec": {
        "type": "object",
        "required": ["type"],
        "additionalProperties": False,
        "properties": {
            "type": {"enum": [*TYPES, "Embedded"], "description": "Embedded is always refused (400)."},
            "source": {"type": "string", "description": "A [sources.NAME] of the sources file."},
            "key": {"type": "string", "maxLength": 512},
            "title": {"type": "string", "maxLength": MAX_TITLE},
            "channels": {"enum": [1, 2]},
            "sid": {"type": "string", "description": "ChatTranscript only: the conversation SID."},
            "start_time": {"description": "Milliseconds since the epoch, or an ISO 8601 time with its offset.",
                           "oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "maxLength": 40}]},
        },
    },
    "LinksRequest": {
        "type": "object",
        "required": ["task_sid", "media"],
        "properties": {
            "task_sid": {"type": "string", "pattern": SID["task"]},
            "media": {"type": "array", "minItems": 1, "maxItems": MAX_ENTRIES, "items": _ref("MediaSpec")},
        },
    },
    "MediaEntry": {
        "type": "object",
        "required": ["type"],
        "properties": {
            "type": {"enum": list(TYPES)},
            "url": {"type": "string", "format": "uri", "description": "A drilldown link: <public URL>/d/<link>."},
            "url_provider": {"type": "string", "format": "uri", "description": "<public URL>/p/<link>."},
            "title": {"type": "string"},
            "channels": {"const": ["customer", "others"], "description": "Dual-channel recordings only."},
            "start_time": {"type": "integer", "description": "Milliseconds since the epoch (what Insights reads)."},
            "sid": {"type": "string", "pattern": SID["conversation"]},
        },
    },
    "LinksResponse": {
        "type": "object",
        "required": ["media"],
        "properties": {"media": {"type": "array", "items": _ref("MediaEntry")}},
    },
    "ResolveRequest": {
        "type": "object",
        "required": ["url"],
        "properties": {"url": {"type": "string", "maxLength": 4096,
                               "description": "A drilldown link issued by this resolver."}},
    },
    "ResolveResponse": {
        "type": "object",
        "required": ["url", "expires_at", "mode", "type", "title"],
        "properties": {
            "url": {"type": "string", "format": "uri", "description": "The grant URL: <public URL>/m/<grant>."},
            "expires_at": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"},
            "mode": {"enum": ["stream", "redirect"]},
            "type": {"type": "string"},
            "title": {"type": "string"},
        },
    },
    "AttachRequest": {
        "type": "object",
        "required": ["workspace_sid"],
        "properties": {
            "workspace_sid": {"type": "string", "pattern": schema_pattern(WORKSPACE_SID)},
            "media": {"type": "array", "maxItems": MAX_ENTRIES, "items": _ref("MediaSpec")},
            "keep_defaults": {"type": "boolean", "description": "Keep the task's own recording and transcript."},
        },
    },
    "AttachResponse": {
        "type": "object",
        "required": ["task_sid", "written", "added", "media"],
        "properties": {
            "task_sid": {"type": "string", "pattern": SID["task"]},
            "written": {"type": "boolean"},
            "added": {"type": "integer", "minimum": 0},
            "media": {"type": "array", "items": {"type": "object"}},
        },
    },
    "RevocationRequest": {
        "type": "object",
        "description": "Exactly one of the properties.",
        "minProperties": 1,
        "maxProperties": 1,
        "properties": {
            "link": {"type": "string", "description": "A drilldown or provider link of this resolver."},
            "task_sid": {"type": "string", "pattern": SID["task"]},
            "subject": {"type": "string", "description": "A Flex identity."},
            "all_before": {"type": "string", "description": "ISO 8601 UTC, or \"now\"."},
        },
    },
    "RevocationResponse": {
        "type": "object",
        "required": ["revocation"],
        "properties": {"revocation": {
            "type": "object",
            "required": ["kind", "value", "at"],
            "properties": {"kind": {"type": "string"}, "value": {"type": "string"}, "at": {}},
        }},
    },
    "ProviderResponse": {
        "type": "object",
        "required": ["media_url"],
        "properties": {"media_url": {"type": "string", "format": "uri", "pattern": r"[?&]X-Amz-Expires=\d+$"}},
    },
}

LINK = {"name": "link_token", "in": "path", "required": True, "schema": TOKEN,
        "description": "A link from /api/v1/links; worthless without a Flex token."}
GRANT = {"name": "grant_token", "in": "path", "required": True, "schema": TOKEN,
         "description": "A short-lived grant from /api/v1/resolve or /p/<link>."}
MEDIA_HEADERS = [
    {"name": name, "in": "header", "required": False, "schema": {"type": "string"}}
    for name in policy.REQUEST_HEADERS_TO_UPSTREAM
]
ORIGIN = {"name": "Origin", "in": "header", "required": False, "schema": {"type": "string"},
          "description": "Only the exact origins of RESOLVER_CORS_ORIGINS; `null` and `*` never."}
MEDIA_BODY = {"*/*": {"schema": {"type": "string", "format": "binary"}}}


def _preflight(methods: str) -> dict[str, Any]:
    return {
        "summary": f"CORS preflight (allows {methods})",
        "security": [],
        "parameters": [ORIGIN, {"name": "Access-Control-Request-Method", "in": "header", "required": False,
                                "schema": {"type": "string"}}],
        "responses": {
            "204": {"description": "An allowed origin's preflight.",
                    "headers": {"Access-Control-Allow-Origin": {"schema": {"type": "string"}, "required": True}}},
            "200": {"description": "No Origin: not a preflight; Allow lists the methods."},
            **errors(403),
        },
    }


def _media(method: str) -> dict[str, Any]:
    body = {} if method == "head" else {"content": MEDIA_BODY}
    return {
        "summary": "Serve a grant: stream the media, or redirect to the allowlisted system",
        "security": [],
        "parameters": [GRANT, ORIGIN, *MEDIA_HEADERS],
        "responses": {
            "200": {"description": "The media, byte for byte.", **body},
            "206": {"description": "The requested range.", **body},
            "302": {"description": "A redirect source: the target rebuilt from the signed source and key.",
                    "headers": {"Location": {"schema": {"type": "string"}, "required": True}}},
            "304": {"description": "Not modified."},
            **errors(403, 404, 405, 414, 416, 429, 502, 504),
        },
    }


def _version() -> str:
    try:
        return metadata.version("flex-media-resolver")
    except metadata.PackageNotFoundError:  # a checkout run without installing
        return "0.0.0+checkout"


def document(public_url: str) -> dict[str, Any]:
    """The whole document; `public_url` (RESOLVER_PUBLIC_URL) is the only server. Every operation may answer
    413: each endpoint has a body limit (policy.BODY_LIMITS), GETs included."""
    doc = _document(public_url)
    for operations in doc["paths"].values():
        for operation in operations.values():
            operation["responses"].setdefault("413", ERRORS["413"])
    return doc


def _document(public_url: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "flex-media-resolver",
            "version": _version(),
            "description": "Short-lived, audited access to Flex Insights media for authorized Flex users only.",
        },
        "servers": [{"url": public_url}],
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "serviceKey": {"type": "http", "scheme": "bearer", "description": "A RESOLVER_API_KEYS entry."},
                "flexToken": {"type": "http", "scheme": "bearer", "description": "The Flex user's token."},
                "flexBasic": {"type": "http", "scheme": "basic",
                              "description": 'base64("token:" + the Flex token), as Flex Insights sends it.'},
                "metricsToken": {"type": "http", "scheme": "bearer",
                                 "description": "RESOLVER_METRICS_TOKEN; unset, /metrics answers 404."},
            },
        },
        "paths": {
            "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {
                "200": {"description": "Up.", "content": {JSON: {"schema": _ref("Health")}}}, **errors(405)}}},
            "/metrics": {"get": {"summary": "Prometheus metrics (operators only)", "security": [{"metricsToken": []}],
                                 "responses": {"200": {"description": "Prometheus text exposition.",
                                                       "content": {"text/plain": {"schema": {"type": "string"}}}},
                                               **errors(401, 404, 405)}}},
            "/api/v1/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {
                "200": {"description": "OpenAPI 3.1.", "content": {JSON: {"schema": {"type": "object"}}}}}}},
            "/api/v1/links": {"post": {
                "summary": "Issue media entries (links that carry no authority) for a task",
                "security": [{"serviceKey": []}],
                "requestBody": {"required": True, "content": {JSON: {"schema": _ref("LinksRequest")}}},
                "responses": {"200": {"description": "Entries, in the order given.",
                                      "content": {JSON: {"schema": _ref("LinksResponse")}}},
                              **errors(400, 401, 404, 405)},
            }},
            "/api/v1/tasks/{task_sid}/media": {"post": {
                "summary": "Write media entries into a TaskRouter task, keeping its other attributes",
                "security": [{"serviceKey": []}],
                "parameters": [{"name": "task_sid", "in": "path", "required": True,
                                "schema": {"type": "string", "pattern": SID["task"]}}],
                "requestBody": {"required": True, "content": {JSON: {"schema": _ref("AttachRequest")}}},
                "responses": {"200": {"description": "The task's media after the merge.",
                                      "content": {JSON: {"schema": _ref("AttachResponse")}}},
                              **errors(400, 401, 404, 405, 409, 502, 504)},
            }},
            "/api/v1/revocations": {"post": {
                "summary": "Revoke a link, a task, a Flex identity, or everything issued before a time",
                "security": [{"serviceKey": []}],
                "requestBody": {"required": True, "content": {JSON: {"schema": _ref("RevocationRequest")}}},
                "responses": {"201": {"description": "Recorded; every instance refuses from now on.",
                                      "content": {JSON: {"schema": _ref("RevocationResponse")}}},
                              **errors(400, 401, 404, 405)},
            }},
            "/hooks/taskrouter": {"post": {
                "summary": "TaskRouter's EventCallbackUrl: attach media before the task is deleted",
                "security": [],
                "parameters": [{"name": "X-Twilio-Signature", "in": "header", "required": False,
                                "schema": {"type": "string"}}],
                "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {
                    "schema": {"type": "object", "additionalProperties": {"type": "string"}}}}},
                "responses": {"204": {"description": "Accepted: the attach runs after this answer (TaskRouter "
                                                     "waits at most 15 s) and its outcome is in the audit "
                                                     "trail; or an event it ignores."},
                              **errors(400, 403, 404, 405, 503)},
            }},
            "/api/v1/resolve": {
                "post": {
                    "summary": "Trade a Flex token and a drilldown link for a short-lived grant URL",
                    "security": [{"flexToken": []}],
                    "parameters": [ORIGIN],
                    "requestBody": {"required": True, "content": {JSON: {"schema": _ref("ResolveRequest")}}},
                    "responses": {"200": {"description": "A grant.",
                                          "content": {JSON: {"schema": _ref("ResolveResponse")}}},
                                  **errors(400, 401, 403, 404, 405, 429, 503)},
                },
                "options": _preflight("POST"),
            },
            "/p/{link_token}": {
                "get": {
                    "summary": "Flex Insights' url_provider: a grant URL the player refreshes by itself",
                    "security": [{"flexBasic": []}],
                    "parameters": [LINK, ORIGIN],
                    "responses": {"200": {"description": "A grant URL with X-Amz-Expires.",
                                          "content": {JSON: {"schema": _ref("ProviderResponse")}}},
                                  **errors(401, 403, 404, 405, 414, 429, 503)},
                },
                "options": _preflight("GET"),
            },
            "/m/{grant_token}": {"get": _media("get"), "head": _media("head"), "options": _preflight("GET, HEAD")},
            "/d/{link_token}": {"get": {
                "summary": "A drilldown link opened outside Flex: explains, never serves",
                "security": [],
                "parameters": [LINK],
                "responses": {"401": ERRORS["401"], **errors(404, 405, 414)},
            }},
            "/static/flex-drilldown.js": {"get": {
                "summary": "The Flex drilldown handler (ES module)",
                "security": [],
                "responses": {"200": {"description": "JavaScript.",
                                      "content": {"text/javascript": {"schema": {"type": "string"}}}},
                              **errors(404, 405)},
            }},
        },
    }
