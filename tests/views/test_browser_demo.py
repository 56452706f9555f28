"""The demo clicked through in real headless Chromium (Debian's /usr/bin/chromium, never a downloaded one).

Checks what a Flex user sees: a recording plays from a grant, a transcript reads as text, a redirect lands on
the external system, a user without an allowed role gets the refusal in words, a drilldown link opened
outside Flex shows the 401 page, and an expired grant mid-playback is renewed where the user was.
Screenshots of each page go to $SCREENSHOT_DIR (default: a pytest temp dir).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from resolver.demo.run import Demo, start_demo
from tests.support.browser import require

sync_api = require()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    running = start_demo(audit_log=str(tmp_path_factory.mktemp("audit") / "audit.log"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = os.environ.get("SCREENSHOT_DIR")
    path = Path(where) if where else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture()
def flex(browser: sync_api.Browser, demo: Demo) -> Iterator[sync_api.Page]:
    """The demo's Flex Insights page, freshly loaded, signed in as the supervisor."""
    context = browser.new_context(viewport={"width": 1100, "height": 640})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(demo.page_url)
    page.get_by_role("button", name="▶ Recording").wait_for()
    yield page
    context.close()
    assert errors == [], errors


def _open(page: sync_api.Page, button: str) -> sync_api.Page:
    with page.expect_popup() as popup:
        page.get_by_role("button", name=button, exact=True).click()
    opened = popup.value
    opened.wait_for_load_state()
    return opened


def _audio_state(player: sync_api.Page) -> dict:
    return player.evaluate(
        "() => { const a = document.querySelector('audio');"
        " return a && {ready: a.readyState, time: a.currentTime, paused: a.paused, duration: a.duration,"
        " src: a.currentSrc, error: a.error && a.error.code}; }"
    )


def _audit(demo: Demo, **match: object) -> list[dict]:
    path = demo.env["RESOLVER_AUDIT_LOG"]
    records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [r for r in records if all(r.get(k) == v for k, v in match.items())]


def _insights_state(flex: sync_api.Page) -> dict:
    return flex.evaluate(
        "() => { const a = document.getElementById('ip-audio');"
        " return {ready: a.readyState, time: a.currentTime, paused: a.paused, duration: a.duration,"
        " src: a.currentSrc, error: a.error && a.error.code, refreshes: window.insightsPlayer.refreshes}; }"
    )


def _provider_calls(flex: sync_api.Page, demo: Demo) -> list[dict]:
    calls: list[dict] = []

    def seen(response: sync_api.Response) -> None:
        if response.url.startswith(demo.resolver_url + "/p/") and response.request.method == "GET":
            calls.append({"url": response.url, "status": response.status,
                          "authorization": response.request.headers.get("authorization")})

    flex.on("response", seen)
    return calls


PLAYING = "() => { const a = document.getElementById('ip-audio'); return a.readyState >= 2 && a.currentTime > 0.5; }"


def test_recording_plays_in_the_insights_player_through_url_provider(flex: sync_api.Page, demo: Demo,
                                                                      shots: Path) -> None:
    """As Flex Insights' player does: url_provider with Basic "token:" + the Flex token, play media_url."""
    calls = _provider_calls(flex, demo)
    popups: list[sync_api.Page] = []
    flex.context.on("page", lambda p: popups.append(p))
    before = len(demo.twilio.media_requests)
    flex.get_by_role("button", name="▶ Recording", exact=True).click()
    flex.wait_for_function(PLAYING)  # it plays, in the Flex page itself
    state = _insights_state(flex)
    assert state["src"].startswith(demo.resolver_url + "/m/") and "X-Amz-Expires=60" in state["src"]
    assert state["duration"] == pytest.approx(8.0, abs=0.1)  # the shipped sample, decoded by the browser
    assert flex.locator("#ip-title").inner_text() == "Call recording"
    assert popups == []  # no drill, no new tab: the player is Insights' own
    entry = flex.evaluate("() => JSON.parse(document.getElementById('demo-config').textContent)"
                          ".conversations[0].media[0]")
    basic = "Basic " + base64.b64encode(f"token:{demo.tokens['allowed']}".encode()).decode()
    assert calls and calls[0] == {"url": entry["url_provider"], "status": 200, "authorization": basic}
    assert _audit(demo, event="resolve", via="provider", outcome="allowed")  # the resolver says: via provider
    fetched = demo.twilio.media_requests[before:]
    assert fetched and all(r["authorized"] for r in fetched)  # bytes came from "Twilio" through the resolver
    flex.screenshot(path=shots / "2-insights-player.png")


def test_encrypted_recording_plays_and_seeks_in_the_insights_player(flex: sync_api.Page, demo: Demo) -> None:
    from resolver.demo.run import ENCRYPTED_SID

    flex.get_by_role("button", name="▶ Encrypted recording").click()
    flex.wait_for_function(PLAYING)
    assert _insights_state(flex)["duration"] == pytest.approx(8.0, abs=0.1)  # the plaintext wav, decoded
    flex.evaluate("() => { const a = document.getElementById('ip-audio'); a.currentTime = 6; a.play(); }")
    flex.wait_for_function("() => document.getElementById('ip-audio').currentTime > 6.2")
    assert _insights_state(flex)["error"] is None
    assert ENCRYPTED_SID in demo.twilio.resource_requests  # it was the encrypted one, read as Twilio serves it


def test_a_playback_error_shows_flex_insights_own_refusal(flex: sync_api.Page) -> None:
    """2.3.3 does not refresh after a playback error: a grant that fails (as an expired one does, 403) shows
    Insights' own words and unloads the recording."""
    flex.get_by_role("button", name="▶ Recording", exact=True).click()
    flex.wait_for_function(PLAYING)
    flex.evaluate("() => { const a = document.getElementById('ip-audio'); const u = new URL(a.currentSrc);"
                  " u.pathname = u.pathname.slice(0, -2) + 'xx'; a.src = u.href; }")
    alert = flex.locator("#ip-error")
    alert.wait_for()
    assert alert.inner_text() == "Unauthorized access. Please login to Flex."
    assert flex.evaluate("() => window.insightsPlayer.refreshes") == 0


def test_expired_grant_is_renewed_where_the_user_was(flex: sync_api.Page, demo: Demo) -> None:
    """The /d/ page Flex opens for a Referenced recording asks the Flex tab's handler for a fresh grant."""
    player = _open(flex, "↗ Recording (Referenced)")
    player.wait_for_function("() => { const a = document.querySelector('audio'); return a && a.readyState >= 2; }")
    first_grant = _audio_state(player)["src"]
    # Seek, then make the current grant fail as an expired one does (the resolver refuses it with 403).
    player.evaluate(
        "async () => { const a = document.querySelector('audio'); a.currentTime = 4;"
        " await new Promise(r => a.addEventListener('seeked', r, {once: true}));"
        " await a.play(); a.src = a.currentSrc.slice(0, -2) + 'xx'; }"
    )
    player.wait_for_function(
        "() => { const a = document.querySelector('audio');"
        " return a.readyState >= 2 && !a.currentSrc.endsWith('xx') && a.currentTime >= 4; }"
    )
    state = _audio_state(player)
    assert state["src"].startswith(demo.resolver_url + "/m/")
    assert state["src"] != first_grant  # a fresh grant, minted by the handler in the Flex page
    assert state["paused"] is False  # and it kept playing


def test_raw_entry_first_in_the_list_is_drilled_to_and_reads_as_text(flex: sync_api.Page, demo: Demo,
                                                                       shots: Path) -> None:
    """A task whose media list starts with Raw (a back-end job's order): Flex drills to it, through the
    HistoricalReportingView action, so the handler resolves it with the user's token."""
    resolves: list[str] = []
    flex.context.on("request", lambda r: resolves.append(r.post_data or "")
                    if r.url == demo.resolver_url + "/api/v1/resolve" else None)
    player = _open(flex, "Transcript")
    player.locator(".transcript .line").first.wait_for()
    lines = player.locator(".transcript .line").all_inner_texts()
    assert len(lines) == 4
    assert "Customer:" in lines[1] and "lost my debit card" in lines[1]
    assert any(demo.links["transcript"] in body for body in resolves)  # the drill went through the handler
    player.screenshot(path=shots / "3-player-transcript.png")


def test_raw_entry_not_first_gets_no_panel(flex: sync_api.Page, demo: Demo) -> None:
    """Our attach never puts Raw first; Flex then shows no panel for it: nothing to click, no request."""
    row = flex.locator("#rows tr").first
    assert row.locator("button[data-type=Raw]").count() == 0
    assert row.get_by_role("button", name="Transcript (Raw, second)").count() == 0
    note = row.locator(".no-panel[data-type=Raw]")
    assert "no panel" in note.inner_text() and "only when it is first" in note.inner_text()
    # The entry itself is there, second, as the attach step writes it (VoiceRecording first).
    media = flex.evaluate("() => JSON.parse(document.getElementById('demo-config').textContent)"
                          ".conversations[0].media")
    assert [m["type"] for m in media][:2] == ["VoiceRecording", "Raw"]
    assert media[1]["url"] == demo.links["transcript"]
    popups: list[sync_api.Page] = []
    flex.context.on("page", lambda p: popups.append(p))
    note.click()
    flex.wait_for_timeout(300)
    assert popups == []


def test_redirect_lands_on_the_external_system(flex: sync_api.Page, demo: Demo, shots: Path) -> None:
    crm = _open(flex, "↗ CRM ticket (Referenced)")
    crm.wait_for_url("**/crm/tickets/4711")
    assert crm.locator("h1").inner_text() == "Ticket 4711"
    assert crm.evaluate("() => window.opener") is None
    crm.screenshot(path=shots / "4-redirect-crm.png")


def test_a_plain_link_opens_as_it_is_and_claims_no_check(flex: sync_api.Page, demo: Demo) -> None:
    """The "Knowledge base (not a resolver link)" row: Flex opens it as it is; the resolver is never asked,
    and the page it lands on must not say the resolver checked the user (as the CRM page rightly does)."""
    resolver_requests: list[str] = []
    flex.context.on("request", lambda r: resolver_requests.append(r.url)
                    if r.url.startswith(demo.resolver_url + "/api/") else None)
    kb = _open(flex, "Knowledge base (not a resolver link)")
    kb.wait_for_url("**/kb/kb-12")
    text = kb.locator("main").inner_text()
    assert "not a resolver link" in text and "nobody checked" in text
    assert "checking the Flex user" not in text and "redirected here" not in text
    assert resolver_requests == []  # no resolve: nothing was checked, and nothing claims it was


def test_user_without_an_allowed_role_sees_the_refusal_in_the_insights_player(flex: sync_api.Page,
                                                                               demo: Demo, shots: Path) -> None:
    """The provider refuses (403): the player falls back to the entry's `url`, the /d/ link, which is no
    media, so the supervisor reads Insights' own refusal; no grant is minted, nothing is streamed."""
    flex.select_option("#user", label="Alex Agent (agent)")
    calls = _provider_calls(flex, demo)
    media: list[str] = []
    flex.on("request", lambda r: media.append(r.url) if "/m/" in r.url else None)
    flex.get_by_role("button", name="▶ Recording", exact=True).click()
    alert = flex.locator("#ip-error")
    alert.wait_for()
    assert alert.inner_text() == "Unauthorized access. Please login to Flex."
    assert [c["status"] for c in calls] == [403]
    assert demo.tokens["denied"] in demo.twilio.validations  # the refusal came from the real role check
    assert _audit(demo, event="resolve", via="provider", outcome="denied")
    assert media == []
    flex.screenshot(path=shots / "5-refused-insights-player.png")


def test_user_without_an_allowed_role_reads_the_refusal_of_a_drill(flex: sync_api.Page, demo: Demo) -> None:
    flex.select_option("#user", label="Alex Agent (agent)")
    popups: list[sync_api.Page] = []
    flex.context.on("page", lambda p: popups.append(p))
    flex.get_by_role("button", name="Transcript", exact=True).click()
    alert = flex.get_by_role("alert").filter(has_text="not allowed")
    alert.wait_for()
    assert popups == []


def test_the_provider_url_is_refreshed_at_nine_tenths_of_its_life(browser: sync_api.Browser,
                                                                   tmp_path_factory: pytest.TempPathFactory) -> None:
    """RESOLVER_GRANT_TTL=4: X-Amz-Expires=4, so the player fetches a new URL after 3.6 s and plays on."""
    short = start_demo(grant_ttl=4, audit_log=str(tmp_path_factory.mktemp("audit-short") / "audit.log"))
    context = browser.new_context()
    try:
        flex = context.new_page()
        flex.goto(short.page_url)
        calls = _provider_calls(flex, short)
        flex.get_by_role("button", name="▶ Recording", exact=True).click()
        flex.wait_for_function(PLAYING)
        first = _insights_state(flex)
        assert "X-Amz-Expires=4" in first["src"]
        flex.wait_for_function("() => window.insightsPlayer.refreshes >= 1", timeout=8000)
        flex.wait_for_function(
            "([old]) => { const a = document.getElementById('ip-audio');"
            " return a.currentSrc !== old && a.readyState >= 2 && !a.paused && a.currentTime > 3.2; }",
            arg=[first["src"]], timeout=8000)
        second = _insights_state(flex)
        assert second["src"].startswith(short.resolver_url + "/m/") and second["src"] != first["src"]
        assert second["error"] is None
        assert [c["status"] for c in calls][:2] == [200, 200]
        assert len(_audit(short, event="resolve", via="provider", outcome="allowed")) >= 2
    finally:
        context.close()
        short.stop()


def test_drilldown_link_opened_outside_flex_shows_the_401_page(browser: sync_api.Browser, demo: Demo,
                                                                shots: Path) -> None:
    context = browser.new_context(viewport={"width": 900, "height": 500})
    page = context.new_page()
    media: list[str] = []
    page.on("request", lambda r: media.append(r.url) if "/m/" in r.url else None)
    answer = page.goto(demo.links["audio"])
    assert answer is not None and answer.status == 401
    assert "from Flex" in page.locator("h1").inner_text()
    assert page.locator("audio, video").count() == 0 and media == []
    page.screenshot(path=shots / "6-drilldown-401.png")
    context.close()


def _grant(demo: Demo, link: str) -> str:
    import requests

    resp = requests.post(f"{demo.resolver_url}/api/v1/resolve", json={"url": link},
                         headers={"Authorization": f"Bearer {demo.tokens['allowed']}"}, timeout=5)
    assert resp.status_code == 200, resp.text
    return resp.json()["url"]


@pytest.mark.parametrize("entry", ["audio", "audio_encrypted"])
def test_grant_opened_directly_in_a_tab_plays_and_seeks(browser: sync_api.Browser, demo: Demo, entry: str) -> None:
    """Chromium's media document re-requests the grant from inside itself; our CSP must allow that.
    The encrypted recording (Voice Recording Encryption) is decrypted on the fly, seeks included."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(_grant(demo, demo.links[entry]))
    ready = "() => { const m = document.querySelector('video, audio'); return m && m.readyState >= 2; }"
    page.wait_for_function(ready)
    page.evaluate("() => { const m = document.querySelector('video, audio'); m.currentTime = 5; m.play(); }")
    page.wait_for_function("() => document.querySelector('video, audio').currentTime > 5.2")
    assert page.evaluate("() => document.querySelector('video, audio').error") is None
    context.close()


def test_transcript_grant_opened_directly_is_shown(browser: sync_api.Browser, demo: Demo) -> None:
    context = browser.new_context()
    page = context.new_page()
    answer = page.goto(_grant(demo, demo.links["transcript"]))
    assert answer is not None and answer.status == 200
    assert "lost my debit card" in page.content()
    context.close()
