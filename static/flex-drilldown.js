// flex-media-resolver: the Flex UI side of a drilldown.
//
// Flex Insights calls the "HistoricalReportingView" action with the URL of the media entry a user clicked.
// Entries made by the resolver point at `<resolver>/d/<link>`, which carries no authority by itself. This
// handler trades such a link, with the logged-in user's Flex token, for a short-lived grant and opens it:
// audio and video in the resolver's small player page (which asks us, through postMessage, for a fresh
// grant when one expires during a long playback), transcripts as text, and `redirect` grants by plain
// navigation. Every other URL goes to Flex's own handler. No build step, no dependencies.
//
// Flex also opens some entries itself, without this action: its Referenced panel calls window.open on the
// entry's `/d/` URL. That page (the resolver's, at the resolver's origin) asks this tab for a grant with
// `fmr:open`; the handler answers windows this tab opened only, and only ever posts to the resolver's
// origin, so the token stays here (README, "The postMessage protocol").
//
// In Flex this file is bundled, not fetched: flex-plugin/ (plugin-media-resolver) imports it at build time and
// calls installDrilldownHandler({ Actions: flex.Actions, manager, resolverUrl, notify }) in its init (README).

const RESOLVE_TIMEOUT_MS = 15000;
const PLAYER_PATH = "/static/player.html";

const MESSAGES = {
  session: "Your Flex session has expired. Reload Flex and try again.",
  forbidden: "You are not allowed to open this media.",
  notFound: "This media link is not known to the resolver. It may have been removed or made for another deployment.",
  rateLimited: "Too many media requests. Wait a moment and try again.",
  twilioDown: "Twilio could not be reached to confirm your session, so the media stays closed. Try again shortly.",
  upstream: "The media store did not deliver this media. Try again later.",
  unreachable: "The media resolver is unreachable. Check your connection, or ask your administrator.",
  badAnswer: "The media resolver gave an answer this page does not understand.",
  popup: "Your browser blocked the media window. Allow pop-ups for Flex and click again.",
};

/** An error whose message is a sentence for the user. */
export class DrilldownError extends Error {
  constructor(message, { status = 0, code = "" } = {}) {
    super(message);
    this.name = "DrilldownError";
    this.status = status;
    this.code = code;
  }
}

/** The current Flex token, read at click time because Flex refreshes it. */
export function currentToken(manager) {
  return (
    manager?.user?.token ||
    manager?.store?.getState?.()?.flex?.session?.ssoTokenPayload?.token ||
    ""
  );
}

/** Flex passes the clicked URL itself; accept a `{ url }` payload too, in case a Flex version wraps it. */
export function drilldownUrl(payload) {
  if (typeof payload === "string") return payload;
  if (payload && typeof payload.url === "string") return payload.url;
  return "";
}

function normalizeBase(resolverUrl) {
  const base = new URL(resolverUrl);
  if (base.search || base.hash || base.username || base.password) {
    throw new TypeError("resolverUrl must be a plain base URL such as https://media.example.com");
  }
  return { origin: base.origin, path: base.pathname.replace(/\/+$/, "") };
}

function within(url, base, prefix) {
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    return false;
  }
  return parsed.origin === base.origin && parsed.pathname.startsWith(`${base.path}${prefix}`);
}

/** The sentence for a refused resolve; the server's own message is a fixed sentence, safe to show. */
export function messageFor(status, body) {
  const server = typeof body?.error?.message === "string" ? body.error.message.slice(0, 300) : "";
  if (status === 401) return MESSAGES.session;
  if (status === 403) return server || MESSAGES.forbidden; // e.g. "Your Flex role is not allowed to open media."
  if (status === 404) return MESSAGES.notFound;
  if (status === 429) return MESSAGES.rateLimited;
  if (status === 503) return MESSAGES.twilioDown;
  if (status === 502 || status === 504) return MESSAGES.upstream;
  return `The media resolver refused the request (HTTP ${status}).`;
}

/** A small dismissible toast, for pages without a notifier of their own. */
export function domNotify(message) {
  if (typeof document === "undefined") {
    console.error(`[flex-drilldown] ${message}`);
    return;
  }
  const toast = document.createElement("div");
  toast.setAttribute("role", "alert");
  toast.className = "fmr-toast";
  toast.style.cssText =
    "position:fixed;right:1rem;bottom:1rem;z-index:99999;max-width:28rem;padding:.8rem 2.4rem .8rem 1rem;" +
    "background:#b3261e;color:#fff;font:14px/1.4 system-ui,sans-serif;border-radius:6px;box-shadow:0 2px 8px #0004";
  toast.textContent = message;
  const close = document.createElement("button");
  close.type = "button";
  close.textContent = "×";
  close.setAttribute("aria-label", "Dismiss");
  close.style.cssText = "position:absolute;top:.3rem;right:.5rem;background:none;border:0;color:#fff;font-size:18px;cursor:pointer";
  close.addEventListener("click", () => toast.remove());
  toast.append(close);
  document.body.append(toast);
  setTimeout(() => toast.remove(), 10000);
}

/**
 * Replace Flex's drilldown action. Options:
 *   Actions      Flex's Actions (needs replaceAction)
 *   manager      Flex's Manager instance (the token is read from it at every click)
 *   resolverUrl  the resolver's RESOLVER_PUBLIC_URL
 *   open         (url) => Window | null; default window.open(url, "_blank")
 *   notify       (message) => void; default a small toast in the page
 *   fetch        default globalThis.fetch
 *   window       where postMessage events arrive; default globalThis.window
 * Returns { resolve(link) } for plugins that want to resolve links themselves.
 */
export function installDrilldownHandler({
  Actions,
  manager,
  resolverUrl,
  open = (url) => globalThis.window.open(url, "_blank"),
  notify = domNotify,
  fetch: fetchImpl = (...args) => globalThis.fetch(...args),
  window: win = globalThis.window,
} = {}) {
  if (!Actions?.replaceAction) throw new TypeError("installDrilldownHandler needs Flex's Actions");
  if (!resolverUrl) throw new TypeError("installDrilldownHandler needs resolverUrl");
  const base = normalizeBase(resolverUrl);
  const players = new Map(); // player window -> { link, grant }

  async function resolve(link) {
    const token = currentToken(manager);
    if (!token) throw new DrilldownError(MESSAGES.session, { status: 401, code: "no_token" });
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), RESOLVE_TIMEOUT_MS);
    let response;
    try {
      response = await fetchImpl(`${base.origin}${base.path}/api/v1/resolve`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json", Authorization: `Bearer ${token}` },
        body: JSON.stringify({ url: link }),
        credentials: "omit",
        cache: "no-store",
        signal: abort.signal,
      });
    } catch {
      throw new DrilldownError(MESSAGES.unreachable, { code: "unreachable" });
    } finally {
      clearTimeout(timer);
    }
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      throw new DrilldownError(messageFor(response.status, body), { status: response.status, code: body?.error?.code || "" });
    }
    const ok = body && within(body.url, base, "/m/") && (body.mode === "stream" || body.mode === "redirect");
    if (!ok) throw new DrilldownError(MESSAGES.badAnswer, { status: response.status, code: "bad_answer" });
    return body;
  }

  function post(player, message) {
    player.postMessage(message, base.origin); // only ever to the resolver's origin
  }

  function grantMessage(grant) {
    return {
      type: "fmr:grant", url: grant.url, mode: grant.mode, mediaType: grant.type, title: grant.title || "",
      expiresAt: grant.expires_at,
    };
  }

  /** True when `source` is a window this Flex tab opened (its `opener` is readable cross-origin). */
  function openedByUs(source) {
    try {
      return Boolean(source) && source.opener === win;
    } catch {
      return false;
    }
  }

  // A /d/ page that Flex itself opened with window.open (the Referenced panel) asks for its grant.
  async function onOpenRequest(event) {
    const link = event.data?.url;
    if (!within(link, base, "/d/") || !openedByUs(event.source)) return;
    const entry = { link, grant: null };
    players.set(event.source, entry);
    post(event.source, { type: "fmr:pending" });
    try {
      entry.grant = await resolve(link);
      post(event.source, grantMessage(entry.grant));
    } catch (err) {
      post(event.source, { type: "fmr:error", message: err instanceof DrilldownError ? err.message : MESSAGES.unreachable });
    }
  }

  async function onMessage(event) {
    for (const [player] of players) if (player.closed) players.delete(player);
    if (event.origin !== base.origin) return; // only the resolver's own pages talk to us
    if (event.data?.type === "fmr:open") {
      await onOpenRequest(event);
      return;
    }
    const entry = players.get(event.source);
    if (!entry) return; // not one of our player windows
    const kind = event.data?.type;
    if (kind === "fmr:ready" && entry.grant) {
      post(event.source, grantMessage(entry.grant));
    } else if (kind === "fmr:refresh") {
      try {
        entry.grant = await resolve(entry.link);
        post(event.source, grantMessage(entry.grant));
      } catch (err) {
        post(event.source, { type: "fmr:error", message: err.message });
      }
    }
  }
  win?.addEventListener?.("message", onMessage);

  function show(link, grant) {
    if (grant.mode === "redirect") {
      const opened = open(grant.url);
      if (!opened) throw new DrilldownError(MESSAGES.popup, { code: "popup_blocked" });
      try {
        opened.opener = null; // the external system gets no handle on Flex
      } catch {
        // a cross-origin window already: nothing to cut
      }
      return;
    }
    const origin = win?.location?.origin || "";
    const player = open(`${base.origin}${base.path}${PLAYER_PATH}#origin=${encodeURIComponent(origin)}`);
    if (!player) throw new DrilldownError(MESSAGES.popup, { code: "popup_blocked" });
    players.set(player, { link, grant });
  }

  Actions.replaceAction("HistoricalReportingView", async (payload, original) => {
    const link = drilldownUrl(payload);
    if (!within(link, base, "/d/")) return original(payload);
    try {
      show(link, await resolve(link));
    } catch (err) {
      notify(err instanceof DrilldownError ? err.message : MESSAGES.unreachable);
    }
  });

  return { resolve };
}
