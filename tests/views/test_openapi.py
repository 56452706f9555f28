"""The OpenAPI document against the live service: schemathesis fuzzes gunicorn (started as the Procfile does).

Two halves:
* generated requests for every operation, with valid credentials supplied by an auth hook (a service key,
  a Flex token the fake Twilio accepts, the same token as Basic for /p): never a 5xx, every answer
  described by the document (status, content type, headers, body schema), auth enforced, 405 elsewhere;
* the success paths, which random data cannot reach (a link must be signed), driven with real links and
  grants and validated against the same document with the same checks.
"""

from __future__ import annotations

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from resolver.views.openapi import document
from tests.support.env import RECORDING_SID, SERVICE_KEY, WORKER, basic, new_token

FLEX = "https://flex.twilio.com"


# positive_data_acceptance expects 2xx for any schema-valid input; a schema cannot say "a link we signed",
# so schema-valid but unsigned links are rightly 400/404: the success paths are checked below instead.
# Invalid input must be refused with a 4xx (never a 5xx); 414 is gunicorn refusing an over-long request line.
CONFIG = """
[checks]
positive_data_acceptance.enabled = false
negative_data_rejection.expected-statuses = [400, 401, 403, 404, 405, 413, 414, 416, 429]
"""


@pytest.fixture(scope="module")
def api_schema(gunicorn):
    return schemathesis.openapi.from_url(f"{gunicorn.url}/api/v1/openapi.json",
                                         config=schemathesis.Config.from_str(CONFIG))


@pytest.fixture(scope="module")
def credentials(twilio) -> dict[str, str]:
    """Valid credentials per operation (schemathesis' ignored_auth check probes without them itself)."""
    return {
        "/api/v1/links": f"Bearer {SERVICE_KEY}",
        "/api/v1/resolve": f"Bearer {new_token(twilio, worker_sid=WORKER, identity='fuzz-resolve@example.com')}",
        "/p/{link_token}": basic(new_token(twilio, worker_sid=WORKER, identity="fuzz-provider@example.com")),
        "/api/v1/tasks/{task_sid}/media": f"Bearer {SERVICE_KEY}",
        "/api/v1/revocations": f"Bearer {SERVICE_KEY}",
    }


# Every operation, from the document itself (the live server serves the same one, built for its own URL).
def links(base: str, media: list[dict]) -> list[dict]:
    resp = requests.post(f"{base}/api/v1/links", json={"task_sid": "WT" + "5" * 32, "media": media},
                         headers={"Authorization": f"Bearer {SERVICE_KEY}"}, timeout=5)
    assert resp.status_code == 200, resp.text
    return resp.json()["media"]


# First in the module: the fuzzing below may revoke "all before <some date>" with a valid service key.
def test_success_paths_match_the_document(api_schema, gunicorn, twilio):
    # its own identity: the fuzzing above may have used up the resolve rate limit of the others
    base, token = gunicorn.url, new_token(twilio, worker_sid=WORKER, identity="openapi-success@example.com")
    media = [{"source": "recordings", "key": RECORDING_SID, "type": "VoiceRecording", "title": "Call"},
             {"source": "crm", "key": "T-9", "type": "Referenced"}]
    op = {(path, method): api_schema[path][method] for path, method in [
        ("/api/v1/links", "POST"), ("/api/v1/resolve", "POST"), ("/p/{link_token}", "GET"),
        ("/m/{grant_token}", "GET"), ("/m/{grant_token}", "HEAD"), ("/d/{link_token}", "GET"),
        ("/p/{link_token}", "OPTIONS"), ("/healthz", "GET"), ("/api/v1/openapi.json", "GET")]}

    def check(path: str, method: str, expected: int, allow_redirects: bool = True, **kw: object):  # type: ignore[no-untyped-def]
        case = op[(path, method)].Case(**kw)
        resp = case.call_and_validate(timeout=10, allow_redirects=allow_redirects)
        assert resp.status_code == expected, (path, method, resp.status_code, resp.text[:200])
        return resp

    service = {"Authorization": f"Bearer {SERVICE_KEY}"}
    rec, crm = check("/api/v1/links", "POST", 200, body={"task_sid": "WT" + "6" * 32, "media": media},
                     headers=service).json()["media"]
    link = rec["url"].rsplit("/", 1)[1]
    flex = {"Authorization": f"Bearer {token}", "Origin": FLEX}
    grant = check("/api/v1/resolve", "POST", 200, body={"url": rec["url"]}, headers=flex).json()["url"]
    grant_token = grant.rsplit("/", 1)[1]
    check("/p/{link_token}", "GET", 200, path_parameters={"link_token": link},
          headers={"Authorization": basic(token), "Origin": FLEX})
    check("/p/{link_token}", "OPTIONS", 204, path_parameters={"link_token": link},
          headers={"Origin": FLEX, "Access-Control-Request-Method": "GET"})
    g = {"grant_token": grant_token}
    full = check("/m/{grant_token}", "GET", 200, path_parameters=g)
    check("/m/{grant_token}", "GET", 206, path_parameters=g, headers={"Range": "bytes=0-99"})
    check("/m/{grant_token}", "GET", 304, path_parameters=g, headers={"If-None-Match": full.headers["etag"][0]})
    check("/m/{grant_token}", "GET", 416, path_parameters=g, headers={"Range": "bytes=99999999-"})
    check("/m/{grant_token}", "HEAD", 200, path_parameters=g)
    crm_grant = check("/api/v1/resolve", "POST", 200, body={"url": crm["url"]}, headers=flex).json()["url"]
    check("/m/{grant_token}", "GET", 302, path_parameters={"grant_token": crm_grant.rsplit("/", 1)[1]},
          allow_redirects=False)
    check("/d/{link_token}", "GET", 401, path_parameters={"link_token": link})
    check("/healthz", "GET", 200)
    check("/api/v1/openapi.json", "GET", 200)
    assert base in requests.get(f"{base}/api/v1/openapi.json", timeout=5).json()["servers"][0]["url"]


# Invalid data only where there is input to make invalid.
OPERATIONS = [
    pytest.param(path, method.upper(), mode, id=f"{method.upper()} {path} {mode.value}")
    for path, item in document("http://127.0.0.1")["paths"].items() for method, op in item.items()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode == GenerationMode.POSITIVE or (method != "options" and ("{" in path or "requestBody" in op))
]


@pytest.mark.parametrize(("path", "method", "mode"), OPERATIONS)
def test_generated_requests_never_fail_the_server_and_match_the_document(api_schema, credentials, path, method,
                                                                          mode):
    # schemathesis' pytest plugin (`from_fixture`) does not run on pytest 9; drive its strategies directly
    @given(case=api_schema[path][method].as_strategy(generation_mode=mode))
    @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def run(case):  # type: ignore[no-untyped-def]
        # passed as explicit headers, so schemathesis knows they are valid and probes without them itself
        auth = {"Authorization": credentials[path]} if path in credentials else None
        response = case.call_and_validate(headers=auth, timeout=10)
        assert response.status_code not in (500, 501), response.text[:300]

    run()


def test_document_describes_every_route_of_the_app(app):
    """A route added without documenting it fails here (and so never escapes the fuzzing above)."""
    documented = {(path, method.upper()) for path, item in document("http://x")["paths"].items()
                  for method in item}
    skip = {"HEAD", "OPTIONS"}
    for rule in app.url_map.iter_rules():
        path = rule.rule.replace("<path:", "{").replace("<", "{").replace(">", "}")
        if rule.endpoint == "static":
            path = "/static/flex-drilldown.js"
        for method in rule.methods - skip:
            assert (path, method) in documented, (path, method)
