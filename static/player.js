// The resolver's media page, in two modes, one protocol (README, "The postMessage protocol").
//
// Player mode (/static/player.html#origin=<Flex origin>): Flex's drilldown handler (flex-drilldown.js) opened
// it and hands it a grant through postMessage, so no grant ever sits in this page's URL or history.
//
// Drilldown mode (/d/<link>, the 401 page with a #fmr-drilldown config): Flex opened the link itself with
// window.open (its Referenced panel does). The page asks its opener for a grant with `fmr:open`, posted
// only to the exact origins of RESOLVER_CORS_ORIGINS (postMessage drops it for any other origin); the
// handler in the Flex tab resolves it with the user's token and answers. Without an opener, or without an
// answer within OPENER_TIMEOUT_MS, the page stays the 401 page it was served as.
//
// Either way: audio and video play in the browser's own player; when a grant expires during a long playback
// the page asks the handler (which holds the Flex token; this page never does) for a fresh one and resumes
// where the user was. Transcripts are shown as text; a redirect grant is followed after cutting `opener`.
// Messages are accepted only from the window that opened us, from the exact origin named, and only grant
// URLs on this origin.

const MAX_REFRESHES = 2; // in a row without any successful load: a broken file, not an expired grant

const OPENER_TIMEOUT_MS = 3000; // for the handler's first answer (fmr:pending comes at once)
const RESOLVE_TIMEOUT_MS = 20000; // for the grant itself, after fmr:pending (Twilio may be slow)

const $ = (id) => document.getElementById(id);
const drilldownConfig = readDrilldownConfig();
const params = new URLSearchParams(location.hash.slice(1));
// Player mode names the Flex origin; drilldown mode learns it from the first answer among the allowed ones.
let flexOrigin = drilldownConfig ? "" : exactOrigin(params.get("origin"));
const allowedOrigins = drilldownConfig ? drilldownConfig.origins.map(exactOrigin).filter(Boolean) : [flexOrigin];
const prefix = drilldownConfig
  ? location.pathname.replace(/\/d\/[^/]*$/, "")
  : location.pathname.replace(/\/static\/player\.html$/, "");
let openerTimer = null;
let served401 = null; // the 401 page's own title and text, restored when Flex does not answer

let media = null; // the <audio>/<video> once known
let lastTime = 0;
let wantPlaying = false;
let refreshing = false;
let failures = 0;

function readDrilldownConfig() {
  const node = document.getElementById("fmr-drilldown");
  if (!node) return null;
  try {
    const config = JSON.parse(node.textContent);
    return Array.isArray(config?.origins) ? config : null;
  } catch {
    return null;
  }
}

function exactOrigin(value) {
  try {
    const url = new URL(value);
    return url.origin === value && (url.protocol === "https:" || url.protocol === "http:") ? value : "";
  } catch {
    return "";
  }
}

function isGrantUrl(value) {
  try {
    const url = new URL(value);
    return url.origin === location.origin && url.pathname.startsWith(`${prefix}/m/`);
  } catch {
    return false;
  }
}

function say(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function toFlex(message) {
  if (window.opener && flexOrigin) window.opener.postMessage(message, flexOrigin);
}

function back401() {
  if (!served401) return;
  document.title = served401.title;
  $("title").textContent = served401.title;
  say(served401.status, true);
}

function waitForFlex(ms) {
  clearTimeout(openerTimer);
  openerTimer = setTimeout(back401, ms);
}

function askOpener() {
  served401 = { title: document.title, status: $("status").textContent };
  const link = `${location.origin}${location.pathname}`; // this page's own URL: the drilldown link
  $("title").textContent = "Opening media…";
  say("Asking Flex for access to this media…");
  for (const origin of allowedOrigins) {
    try {
      window.opener.postMessage({ type: "fmr:open", url: link }, origin); // dropped unless opener is at origin
    } catch {
      // an opener that is gone or closing: the timer restores the 401 page
    }
  }
  waitForFlex(OPENER_TIMEOUT_MS);
}

function followRedirect(url) {
  try {
    window.opener = null; // the external system gets no handle on the Flex tab
  } catch {
    // nothing to cut
  }
  say("Opening the external system…");
  location.replace(url);
}

function askForFreshGrant() {
  if (refreshing) return;
  if (failures >= MAX_REFRESHES) {
    say("The media could not be loaded. Close this window and open it again from Flex.", true);
    return;
  }
  failures += 1;
  refreshing = true;
  say("The media link expired; asking Flex for a fresh one…");
  toFlex({ type: "fmr:refresh" });
}

function clock(seconds) {
  const s = Math.max(0, Math.floor(Number(seconds) || 0));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

// Transcripts come in many shapes; a list of {speaker, text, start} lines is shown as a dialogue,
// anything else as pretty-printed JSON or plain text. Always textContent, never HTML.
function dialogueLines(data) {
  const list = Array.isArray(data)
    ? data
    : [data?.transcript, data?.sentences, data?.segments, data?.lines, data?.results].find(Array.isArray);
  if (!list?.length) return null;
  const lines = list.map((item) => ({
    who: item?.speaker ?? item?.participant ?? item?.role ?? item?.author ?? item?.channel ?? "",
    text: item?.text ?? item?.transcript ?? item?.content ?? item?.body,
    at: item?.start ?? item?.start_time ?? item?.timestamp,
  }));
  return lines.every((line) => typeof line.text === "string") ? lines : null;
}

function showText(body, contentType) {
  const box = document.createElement("div");
  box.className = "transcript";
  let data = null;
  if (contentType.includes("json")) {
    try {
      data = JSON.parse(body);
    } catch {
      data = null;
    }
  }
  const lines = data && dialogueLines(data);
  if (lines) {
    for (const line of lines) {
      const p = document.createElement("p");
      p.className = "line";
      if (line.at !== undefined) p.append(Object.assign(document.createElement("span"), { className: "at", textContent: clock(line.at) }));
      if (line.who !== "") p.append(Object.assign(document.createElement("span"), { className: "who", textContent: `${line.who}:` }));
      p.append(document.createTextNode(line.text));
      box.append(p);
    }
  } else {
    const pre = document.createElement("pre");
    pre.textContent = data ? JSON.stringify(data, null, 2) : body;
    box.append(pre);
  }
  $("stage").replaceChildren(box);
  say("Transcript");
}

function showMedia(url, kind) {
  media = document.createElement(kind);
  media.controls = true;
  media.preload = "auto";
  if (kind === "video") media.playsInline = true;
  // A new src resets the position to 0 while readyState is HAVE_NOTHING: keep the user's place then.
  const remember = () => { if (media.readyState > 0 && !refreshing) lastTime = media.currentTime; };
  media.addEventListener("timeupdate", remember);
  media.addEventListener("seeking", remember);
  media.addEventListener("play", () => { wantPlaying = true; });
  media.addEventListener("pause", () => { if (!media.error && !refreshing) wantPlaying = false; });
  media.addEventListener("loadeddata", () => { failures = 0; say(""); });
  media.addEventListener("error", () => {
    if (media.error?.code === MediaError.MEDIA_ERR_DECODE) {
      say("This browser cannot play this media file.", true);
    } else {
      askForFreshGrant();
    }
  });
  media.src = url;
  $("stage").replaceChildren(media);
  say("Loading…");
  media.play().catch(() => say("Press play to listen.")); // autoplay may be refused; the controls remain
}

function swapGrant(url) {
  const at = lastTime;
  const resume = wantPlaying;
  media.addEventListener("loadedmetadata", () => {
    if (at) media.currentTime = at;
    if (resume) media.play().catch(() => say("Press play to continue."));
  }, { once: true });
  media.src = url;
}

async function firstGrant(message) {
  const head = await fetch(message.url, { method: "HEAD", cache: "no-store" });
  if (!head.ok) {
    say("This media link is no longer valid. Open it again from Flex.", true);
    return;
  }
  const contentType = (head.headers.get("Content-Type") || "").toLowerCase();
  if (contentType.startsWith("audio/") || contentType.startsWith("video/")) {
    showMedia(message.url, contentType.startsWith("video/") ? "video" : "audio");
  } else if (contentType.startsWith("text/") || contentType.includes("json")) {
    const response = await fetch(message.url, { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    showText(await response.text(), contentType);
  } else {
    const a = Object.assign(document.createElement("a"), { href: message.url, rel: "noreferrer", textContent: "Download the file" });
    $("stage").replaceChildren(a);
    say("This file cannot be shown here.");
  }
}

async function onGrant(message) {
  clearTimeout(openerTimer);
  if (message.mode === "redirect") {
    followRedirect(message.url);
    return;
  }
  $("code")?.remove();
  document.title = message.title || "Media";
  $("title").textContent = message.title || "Media";
  refreshing = false;
  if (media) {
    swapGrant(message.url);
    return;
  }
  try {
    await firstGrant(message);
  } catch {
    say("The media could not be loaded. Close this window and open it again from Flex.", true);
  }
}

window.addEventListener("message", (event) => {
  if (!window.opener || event.source !== window.opener) return;
  if (flexOrigin ? event.origin !== flexOrigin : !allowedOrigins.includes(event.origin)) return;
  flexOrigin = event.origin; // drilldown mode: from now on, only this origin
  const message = event.data || {};
  if (message.type === "fmr:pending") {
    waitForFlex(RESOLVE_TIMEOUT_MS);
  } else if (message.type === "fmr:grant" && isGrantUrl(message.url)) {
    onGrant(message);
  } else if (message.type === "fmr:error") {
    clearTimeout(openerTimer);
    refreshing = false;
    if (!media) $("title").textContent = "This media could not be opened";
    say(String(message.message || "Flex could not renew access to this media.").slice(0, 300), true);
  }
});

if (drilldownConfig) {
  // No opener (opened outside Flex, or with noopener) or no allowed origin: the 401 page stays as served.
  if (window.opener && allowedOrigins.length) askOpener();
} else if (!window.opener || !flexOrigin) {
  $("title").textContent = "Open this media from Flex";
  say("This page plays media handed over by Flex Insights. Open the conversation in Flex and click the media there.", true);
} else {
  toFlex({ type: "fmr:ready" });
}
