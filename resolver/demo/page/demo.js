// The demo's fake Flex: a conversation list whose media buttons invoke "HistoricalReportingView" exactly as
// Flex Insights does, handled by the real flex-drilldown.js from the resolver.
const config = JSON.parse(document.getElementById("demo-config").textContent);
const { installDrilldownHandler } = await import(`${config.resolverUrl}/static/flex-drilldown.js`);

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

const select = document.getElementById("user");
for (const [i, user] of config.users.entries()) {
  select.append(new Option(`${user.name} (${user.role})`, String(i)));
}
select.addEventListener("change", () => {
  manager.user.token = config.users[Number(select.value)].token; // as Flex would after a new login
});

const rows = document.getElementById("rows");
for (const conversation of config.conversations) {
  const tr = document.createElement("tr");
  for (const value of [conversation.date, conversation.agent, conversation.customer, conversation.queue, conversation.talk]) {
    tr.append(Object.assign(document.createElement("td"), { textContent: value }));
  }
  const cell = Object.assign(document.createElement("td"), { className: "media" });
  for (const media of conversation.media) {
    const button = Object.assign(document.createElement("button"), { type: "button", className: "media", textContent: media.label });
    button.dataset.kind = media.kind;
    // Referenced entries: what Flex's Referenced panel does ("Open in a new tab"), no action involved.
    const click = media.open === "window"
      ? () => window.open(media.url)
      : () => Actions.invokeAction("HistoricalReportingView", media.url);
    button.addEventListener("click", click);
    cell.append(button);
  }
  tr.append(cell);
  rows.append(tr);
}
document.getElementById("direct").href = config.directLink;
