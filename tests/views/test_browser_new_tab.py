"""`/d/<link>` opened by Flex in a new tab, in real headless Chromium (Debian's /usr/bin/chromium).

The opener is the demo's Flex stand-in, at an origin listed in RESOLVER_CORS_ORIGINS, running the real
flex-drilldown.js; its "Referenced" buttons call `window.open(url)` exactly as Flex's Referenced panel does
("Open in a new tab"). Checks: the /d/ page gets its grant from the opener over postMessage and plays or
redirects; the Flex token never reaches the resolver's tab; without an opener, with `noopener`, with an
opener that does not answer, or with an opener at an origin not listed, the page stays the 401 page.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from resolver.demo.run import Demo, start_demo
from tests.support.browser import require

sync_api = require()

# Every message any page receives, and every page's URL, recorded in the page itself (popups included).
RECORD_MESSAGES = """
window.__seen = [];
window.addEventListener("message", (e) => {
  try { window.__seen.push({origin: e.origin, data: JSON.stringify(e.data)}); } catch { /* unclonable */ }
}, true);
"""
STAYS_401 = 3500 + 1000  # the page's opener timeout (3 s) and a margin, in milliseconds


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    running = start_demo(audit_log=str(tmp_path_factory.mktemp("audit") / "audit.log"))
    yield running
    running.stop()


@pytest.fixture()
def context(browser: sync_api.Browser) -> Iterator[sync_api.BrowserContext]:
    context = browser.new_context(viewport={"width": 1000, "height": 600})
    context.add_init_script(RECORD_MESSAGES)
    errors: list[str] = []
    context.on("page", lambda p: p.on("pageerror", lambda e: errors.append(str(e))))
    yield context
    context.close()
    assert errors == [], errors


@pytest.fixture()
def flex(context: sync_api.BrowserContext, demo: Demo) -> sync_api.Page:
    page = context.new_page()
    page.goto(demo.page_url)
    page.get_by_role("button", name="↗ Recording (Referenced)").wait_for()
    return page


def click_popup(page: sync_api.Page, button: str) -> sync_api.Page:
    with page.expect_popup() as popup:
        page.get_by_role("button", name=button).click()
    opened = popup.value
    opened.wait_for_load_state()
    return opened


def window_open(opener: sync_api.Page, url: str, features: str = "") -> sync_api.Page:
    with opener.expect_popup() as popup:
        opener.evaluate("([u, f]) => { window.open(u, '_blank', f); }", [url, features])
    opened = popup.value
    opened.wait_for_load_state()
    return opened


def assert_stays_401(page: sync_api.Page) -> None:
    page.wait_for_timeout(STAYS_401)
    assert "from Flex" in page.locator("h1").inner_text()
    assert "only works from Twilio Flex" in page.locator("#status").inner_text()
    assert page.locator("audio, video").count() == 0


def test_referenced_recording_opened_by_flex_plays_from_a_grant(flex, demo: Demo) -> None:
    media: list[str] = []
    flex.context.on("request", lambda r: media.append(r.url) if "/m/" in r.url else None)
    tab = click_popup(flex, "↗ Recording (Referenced)")
    assert tab.url == demo.links["referenced_audio"]  # Flex opened the /d/ link itself
    tab.wait_for_function("() => { const a = document.querySelector('audio'); return a && a.readyState >= 2; }")
    tab.wait_for_function("() => document.querySelector('audio').currentTime > 0.3")  # it plays
    src = tab.evaluate("() => document.querySelector('audio').currentSrc")
    assert src.startswith(demo.resolver_url + "/m/") and "/m/" not in tab.url
    assert tab.locator("h1").inner_text() == "Call recording (Referenced)"
    assert tab.locator("#code").count() == 0  # the 401 marker is gone once media plays
    # The exchange: the page asked with its own link, the Flex tab answered pending, then the grant.
    asked = [json.loads(m["data"]) for m in flex.evaluate("() => window.__seen")]
    assert {"type": "fmr:open", "url": demo.links["referenced_audio"]} in asked
    got = [json.loads(m["data"]) for m in tab.evaluate("() => window.__seen")]
    assert [m["type"] for m in got][:2] == ["fmr:pending", "fmr:grant"]
    assert all(m["origin"] == demo.page_url.rstrip("/") for m in tab.evaluate("() => window.__seen"))
    # The Flex token never entered the resolver's tab: not in a message, the URL, the page or its storage.
    token = demo.tokens["allowed"]
    assert token not in json.dumps(got) and token not in tab.url and token not in tab.content()
    assert token not in tab.evaluate("() => JSON.stringify(localStorage) + JSON.stringify(sessionStorage)")
    assert media and all(u.startswith(demo.resolver_url + "/m/") for u in media)


def test_referenced_redirect_opened_by_flex_lands_on_the_external_system(flex) -> None:
    tab = click_popup(flex, "↗ CRM ticket (Referenced)")
    tab.wait_for_url("**/crm/tickets/4711")
    assert tab.locator("h1").inner_text() == "Ticket 4711"
    assert tab.evaluate("() => window.opener") is None  # the external system has no handle on Flex


def test_a_user_without_an_allowed_role_reads_the_refusal_in_the_new_tab(flex, demo: Demo) -> None:
    flex.select_option("#user", label="Alex Agent (agent)")
    tab = click_popup(flex, "↗ Recording (Referenced)")
    tab.get_by_text("not allowed").wait_for()
    assert tab.locator("h1").inner_text() == "This media could not be opened"
    assert tab.locator("audio, video").count() == 0
    assert demo.tokens["denied"] in demo.twilio.validations  # the real role check refused it


def test_opened_with_noopener_it_stays_the_401_page(flex, demo: Demo) -> None:
    tab = window_open(flex, demo.links["referenced_audio"], "noopener")
    assert tab.evaluate("() => window.opener") is None
    assert_stays_401(tab)
    assert tab.evaluate("() => window.__seen") == []


def test_opener_that_does_not_answer_leaves_the_401_page(context, demo: Demo) -> None:
    # An allowed origin (the demo site) but a page without the handler: the CRM stand-in page.
    quiet = context.new_page()
    quiet.goto(demo.page_url + "crm/tickets/1")
    tab = window_open(quiet, demo.links["referenced_audio"])
    assert_stays_401(tab)


def test_an_opener_at_an_origin_not_listed_gets_no_request(context, demo: Demo) -> None:
    # The fake Twilio's origin is not in RESOLVER_CORS_ORIGINS: the page's fmr:open is never delivered there.
    other = context.new_page()
    other.goto(demo.twilio_url + "/nothing-here")
    tab = window_open(other, demo.links["referenced_audio"])
    assert_stays_401(tab)
    assert other.evaluate("() => window.__seen") == []


def test_the_flex_handler_answers_only_windows_it_opened(context, demo: Demo) -> None:
    # A page at the resolver's origin that Flex did not open (here: it opened Flex) asks for a grant with the
    # right message from the right origin: the handler ignores it, since the asking window is not its popup.
    resolver_page = context.new_page()
    resolver_page.goto(demo.resolver_url + "/healthz")
    with resolver_page.expect_popup() as popup:
        resolver_page.evaluate("([u]) => { window.__flex = window.open(u); }", [demo.page_url])
    flex_tab = popup.value
    flex_tab.get_by_role("button", name="↗ Recording (Referenced)").wait_for()
    resolver_page.evaluate("([link, origin]) => window.__flex.postMessage({type: 'fmr:open', url: link}, origin)",
                           [demo.links["referenced_audio"], demo.page_url.rstrip("/")])
    resolver_page.wait_for_timeout(1500)
    assert [m for m in flex_tab.evaluate("() => window.__seen") if "fmr:open" in m["data"]]  # it did arrive
    assert resolver_page.evaluate("() => window.__seen") == []  # and got no pending, no grant
