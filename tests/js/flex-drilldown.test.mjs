// The drilldown handler against a fake Flex (Actions, manager, windows) and, where RESOLVER_URL is set, a real
// running resolver (tests/test_flex_drilldown_js.py starts one with a fake Twilio and sets the variables).
// Run: node --test tests/js/
import assert from "node:assert/strict";
import net from "node:net";
import { test } from "node:test";

import {
  currentToken,
  drilldownUrl,
  installDrilldownHandler,
  messageFor,
} from "../../static/flex-drilldown.js";

const env = process.env;
const live = env.RESOLVER_URL ? {} : { skip: "RESOLVER_URL is not set (run through pytest)" };
const FLEX_ORIGIN = "https://flex.example.test";

/** A fake Flex: records replaced actions, windows opened, notifications and every fetch. */
function fakeFlex({ resolverUrl = env.RESOLVER_URL || "http://127.0.0.1:9", token = "" } = {}) {
  const handlers = {};
  const flex = {
    originalCalls: [],
    opened: [],
    notes: [],
    fetches: [],
    manager: { user: { token } },
    events: new EventTarget(),
  };
  flex.events.location = { origin: FLEX_ORIGIN };
  flex.Actions = { replaceAction: (name, fn) => { handlers[name] = fn; } };
  flex.click = (payload) => handlers.HistoricalReportingView(payload, (p) => flex.originalCalls.push(p));
  flex.api = installDrilldownHandler({
    Actions: flex.Actions,
    manager: flex.manager,
    resolverUrl,
    open: (url) => {
      const win = { url, opener: "flex", closed: false, posted: [], postMessage(message, origin) { this.posted.push({ message, origin }); } };
      flex.opened.push(win);
      return win;
    },
    notify: (message) => flex.notes.push(message),
    fetch: async (url, init) => {
      flex.fetches.push({ url, init });
      return fetch(url, init);
    },
    window: flex.events,
  });
  /** Deliver a postMessage from a player window, as the browser would. */
  flex.message = async (source, origin, data) => {
    const event = new Event("message");
    Object.assign(event, { source, origin, data });
    flex.events.dispatchEvent(event);
    await new Promise((resolve) => setTimeout(resolve, 50));
  };
  return flex;
}

async function waitFor(predicate, what) {
  for (let i = 0; i < 200; i++) {
    if (predicate()) return;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  assert.fail(`timed out waiting for ${what}`);
}

async function closedPort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

// ---- logic that needs no resolver --------------------------------------------------------------

test("a URL that is not a resolver drilldown link goes to Flex's own handler untouched", async () => {
  const flex = fakeFlex({ resolverUrl: "https://media.example.com", token: "tok" });
  for (const url of [
    "https://crm.example.com/ticket/1",
    "https://media.example.com/p/abc", // provider links belong to the Insights player
    "https://media.example.com.evil.test/d/abc",
    "http://media.example.com/d/abc", // another origin: the token must not go there
    "not a url",
  ]) {
    await flex.click(url);
  }
  assert.equal(flex.originalCalls.length, 5);
  assert.equal(flex.fetches.length, 0, "nothing may be sent anywhere for foreign URLs");
});

test("a resolver mounted under a path only claims links under that path", async () => {
  const flex = fakeFlex({ resolverUrl: "https://example.com/media/", token: "tok" });
  await flex.click("https://example.com/d/abc");
  assert.deepEqual(flex.originalCalls, ["https://example.com/d/abc"]);
});

test("the payload may be the URL itself or an object carrying it", () => {
  assert.equal(drilldownUrl("https://a/d/x"), "https://a/d/x");
  assert.equal(drilldownUrl({ url: "https://a/d/x" }), "https://a/d/x");
  assert.equal(drilldownUrl({}), "");
  assert.equal(drilldownUrl(null), "");
});

test("the token comes from manager.user first, then from the Flex session in the store", () => {
  const store = { getState: () => ({ flex: { session: { ssoTokenPayload: { token: "from-store" } } } }) };
  assert.equal(currentToken({ user: { token: "from-user" }, store }), "from-user");
  assert.equal(currentToken({ user: {}, store }), "from-store");
  assert.equal(currentToken({}), "");
});

test("without a Flex token the user is told the session expired and nothing is sent", async () => {
  const flex = fakeFlex({ resolverUrl: "https://media.example.com", token: "" });
  await flex.click("https://media.example.com/d/abc");
  assert.equal(flex.fetches.length, 0);
  assert.match(flex.notes[0], /session has expired/);
});

test("an unreachable resolver is reported in words", async () => {
  const port = await closedPort();
  const flex = fakeFlex({ resolverUrl: `http://127.0.0.1:${port}`, token: "tok" });
  await flex.click(`http://127.0.0.1:${port}/d/abc`);
  assert.equal(flex.fetches.length, 1);
  assert.match(flex.notes[0], /resolver is unreachable/);
  assert.equal(flex.opened.length, 0);
});

test("each refusal status has its own sentence", () => {
  const cases = [
    [401, /session has expired/],
    [403, /not allowed/],
    [404, /not known/],
    [429, /Too many/],
    [503, /Twilio could not be reached/],
    [502, /media store/],
    [500, /HTTP 500/],
  ];
  for (const [status, expected] of cases) assert.match(messageFor(status, null), expected, String(status));
  assert.match(messageFor(403, { error: { code: "revoked", message: "Access to this media has been revoked." } }), /revoked/);
});

// ---- against the running resolver ---------------------------------------------------------------

test("an allowed user gets a player window, and the grant is handed only to the resolver's origin", live, async () => {
  const flex = fakeFlex({ token: env.FLEX_TOKEN_ALLOWED });
  await flex.click(env.DRILLDOWN_AUDIO);
  assert.deepEqual(flex.notes, []);
  const [resolveCall] = flex.fetches;
  assert.equal(resolveCall.url, `${env.RESOLVER_URL}/api/v1/resolve`);
  assert.equal(resolveCall.init.headers.Authorization, `Bearer ${env.FLEX_TOKEN_ALLOWED}`);
  assert.deepEqual(JSON.parse(resolveCall.init.body), { url: env.DRILLDOWN_AUDIO });

  assert.equal(flex.opened.length, 1);
  const player = flex.opened[0];
  assert.equal(player.url, `${env.RESOLVER_URL}/static/player.html#origin=${encodeURIComponent(FLEX_ORIGIN)}`);

  // Messages from another origin or another window are ignored.
  await flex.message(player, "https://evil.example", { type: "fmr:ready" });
  await flex.message({ postMessage() { assert.fail("posted to a stranger"); } }, new URL(env.RESOLVER_URL).origin, { type: "fmr:ready" });
  assert.equal(player.posted.length, 0);

  await flex.message(player, new URL(env.RESOLVER_URL).origin, { type: "fmr:ready" });
  assert.equal(player.posted.length, 1);
  const { message, origin } = player.posted[0];
  assert.equal(origin, new URL(env.RESOLVER_URL).origin);
  assert.equal(message.type, "fmr:grant");
  assert.ok(message.url.startsWith(`${env.RESOLVER_URL}/m/`), message.url);

  const media = await fetch(message.url, { headers: { Range: "bytes=0-3" } });
  assert.equal(media.status, 206);
  assert.equal(Buffer.from(await media.arrayBuffer()).toString("latin1"), "RIFF");
});

test("a player whose grant expired gets a fresh one, minted with the token current at that moment", live, async () => {
  const flex = fakeFlex({ token: env.FLEX_TOKEN_ALLOWED });
  await flex.click(env.DRILLDOWN_AUDIO);
  const player = flex.opened[0];
  const resolverOrigin = new URL(env.RESOLVER_URL).origin;
  await flex.message(player, resolverOrigin, { type: "fmr:ready" });

  flex.manager.user.token = env.FLEX_TOKEN_ALLOWED_2; // Flex refreshed its token
  await flex.message(player, resolverOrigin, { type: "fmr:refresh" });
  await waitFor(() => player.posted.length === 2, "the refreshed grant");
  const [first, second] = player.posted.map((p) => p.message);
  assert.equal(second.type, "fmr:grant");
  assert.notEqual(second.url, first.url);
  assert.equal(flex.fetches[1].init.headers.Authorization, `Bearer ${env.FLEX_TOKEN_ALLOWED_2}`);
  assert.equal((await fetch(second.url, { method: "HEAD" })).status, 200);
});

test("a refresh that is refused tells the player why", live, async () => {
  const flex = fakeFlex({ token: env.FLEX_TOKEN_ALLOWED });
  await flex.click(env.DRILLDOWN_AUDIO);
  const player = flex.opened[0];
  flex.manager.user.token = env.FLEX_TOKEN_DENIED; // e.g. the role was taken away meanwhile
  await flex.message(player, new URL(env.RESOLVER_URL).origin, { type: "fmr:refresh" });
  await waitFor(() => player.posted.length === 1, "the refusal");
  assert.equal(player.posted[0].message.type, "fmr:error");
  assert.match(player.posted[0].message.message, /not allowed/);
});

test("a user without an allowed role is told so and nothing opens", live, async () => {
  const flex = fakeFlex({ token: env.FLEX_TOKEN_DENIED });
  await flex.click(env.DRILLDOWN_AUDIO);
  assert.equal(flex.opened.length, 0);
  assert.equal(flex.notes.length, 1);
  assert.match(flex.notes[0], /not allowed/);
});

test("a token Twilio does not accept reads as an expired session", live, async () => {
  const flex = fakeFlex({ token: "not-a-flex-token" });
  await flex.click(env.DRILLDOWN_AUDIO);
  assert.equal(flex.opened.length, 0);
  assert.match(flex.notes[0], /session has expired/);
});

test("a forged link is unknown", live, async () => {
  const flex = fakeFlex({ token: env.FLEX_TOKEN_ALLOWED });
  await flex.click(`${env.RESOLVER_URL}/d/${"x".repeat(40)}.forged`);
  assert.match(flex.notes[0], /not known to the resolver/);
});

test("a transcript opens in the player page too", live, async () => {
  const flex = fakeFlex({ token: env.FLEX_TOKEN_ALLOWED });
  await flex.click(env.DRILLDOWN_TRANSCRIPT);
  assert.deepEqual(flex.notes, []);
  assert.ok(flex.opened[0].url.startsWith(`${env.RESOLVER_URL}/static/player.html#`));
});

test("a redirect grant is opened directly, without a handle back to Flex", live, async () => {
  const flex = fakeFlex({ token: env.FLEX_TOKEN_ALLOWED });
  await flex.click(env.DRILLDOWN_REDIRECT);
  assert.deepEqual(flex.notes, []);
  const [win] = flex.opened;
  assert.ok(win.url.startsWith(`${env.RESOLVER_URL}/m/`), win.url);
  assert.equal(win.opener, null);
  const answer = await fetch(win.url, { redirect: "manual" });
  assert.equal(answer.status, 302);
});

test("when Twilio cannot be reached the user is told, and no grant is made", live, async () => {
  assert.ok(env.TWILIO_DOWN_RESOLVER_URL, "TWILIO_DOWN_RESOLVER_URL is set");
  const flex = fakeFlex({ resolverUrl: env.TWILIO_DOWN_RESOLVER_URL, token: env.FLEX_TOKEN_ALLOWED });
  await flex.click(env.TWILIO_DOWN_DRILLDOWN);
  assert.equal(flex.opened.length, 0);
  assert.match(flex.notes[0], /Twilio could not be reached/);
});

test("a grant URL outside the resolver's /m/ is refused, never opened", async () => {
  const handlers = {};
  const opened = [];
  const notes = [];
  installDrilldownHandler({
    Actions: { replaceAction: (name, fn) => { handlers[name] = fn; } },
    manager: { user: { token: "tok" } },
    resolverUrl: "https://media.example.com",
    open: (url) => opened.push(url),
    notify: (message) => notes.push(message),
    fetch: async () => new Response(JSON.stringify({ url: "https://evil.example/m/x", mode: "stream" }), { status: 200 }),
    window: new EventTarget(),
  });
  await handlers.HistoricalReportingView("https://media.example.com/d/abc", () => assert.fail("not Flex's"));
  assert.deepEqual(opened, []);
  assert.match(notes[0], /does not understand/);
});
