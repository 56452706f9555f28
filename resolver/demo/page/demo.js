// The demo's fake Flex: a Conversations list that treats each media entry as Flex 2.17 does (see panelFor);
// drills (the "HistoricalReportingView" action) are handled by the real flex-drilldown.js from the resolver.
const config = JSON.parse(document.getElementById("demo-config").textContent);
const { installDrilldownHandler } = await import(`${config.resolverUrl}/static/flex-drilldown.js`);
import { InsightsPlayer } from "./insights-player.js";

const handlers = {};
const Actions = {
  replaceAction(name, handler) { handlers[name] = handler; },
  // Flex's own drilldown handler: opens the URL as it is (what happens to links the resolver does not own).
  invokeAction(name, payload) {
    return handlers[name](payload, (url) => window.open(url, "_blank", "noopener"));
  },
};
const manager = { user: { token: config.users[0].token } };
installDrilldownHandler({ Actions, manager, resolverUrl: config.resolverUrl });

// Flex Insights' own player, embedded in the page: it plays VoiceRecording entries through url_provider.
const player = new InsightsPlayer({
  audio: document.getElementById("ip-audio"),
  title: document.getElementById("ip-title"),
  error: document.getElementById("ip-error"),
  token: () => manager.user.token,
});
window.insightsPlayer = player; // for the demo's tests

const select = document.getElementById("user");
for (const [i, user] of config.users.entries()) {
  select.append(new Option(`${user.name} (${user.role})`, String(i)));
}
select.addEventListener("change", () => {
  manager.user.token = config.users[Number(select.value)].token; // as Flex would after a new login
});

// What Flex 2.17 shows for each entry of a task's media list, by type and position.
function drill(url) { return Actions.invokeAction("HistoricalReportingView", url); }
function panelFor(entry, index) {
  switch (entry.type) {
    case "VoiceRecording": // the Insights player, through url_provider (only the first one is visible)
      return () => { document.getElementById("insights-player").hidden = false; return player.load(entry); };
    case "Referenced": // the Referenced panel's "Open in a new tab": window.open(url), no action involved
      return () => window.open(entry.url);
    case "Raw": // Twilio's Custom Media page: Flex drills to a Raw entry only when it is first in the list
      return index === 0 ? () => drill(entry.url) : null;
    default:
      return null;
  }
}

const rows = document.getElementById("rows");
for (const conversation of config.conversations) {
  const tr = document.createElement("tr");
  for (const value of [conversation.date, conversation.agent, conversation.customer, conversation.queue, conversation.talk]) {
    tr.append(Object.assign(document.createElement("td"), { textContent: value }));
  }
  const cell = Object.assign(document.createElement("td"), { className: "media" });
  for (const [index, entry] of conversation.media.entries()) {
    const click = panelFor(entry, index);
    if (click === null) {
      // Flex shows nothing for it; the demo says so, without a button (there is nothing to click in Flex).
      const note = Object.assign(document.createElement("span"), {
        className: "no-panel", textContent: `${entry.label}: no panel (Flex drills to Raw only when it is first)`,
      });
      note.dataset.type = entry.type;
      cell.append(note);
      continue;
    }
    const button = Object.assign(document.createElement("button"), { type: "button", className: "media", textContent: entry.label });
    button.dataset.type = entry.type;
    button.addEventListener("click", click);
    cell.append(button);
  }
  tr.append(cell);
  rows.append(tr);
}
document.getElementById("direct").href = config.directLink;
