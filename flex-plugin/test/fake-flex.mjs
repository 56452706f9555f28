// A small fake of what the plugin touches in Flex: Actions.replaceAction, Notifications, NotificationType and the
// Manager's user token, strings and configuration. The handler's real behaviour is tested against a running
// resolver (tests/js/) and in Chromium (tests/views/); this only checks how the plugin wires it into Flex.

export function fakeFlex() {
  const flex = {
    actions: {},
    registered: [],
    shown: [],
    originalCalls: [],
    Actions: { replaceAction: (name, fn) => { flex.actions[name] = fn; } },
    NotificationType: { information: 'information', success: 'success', warning: 'warning', error: 'error' },
    Notifications: {
      registerNotification: (notification) => flex.registered.push(notification),
      showNotification: (id, context) => flex.shown.push({ id, context }),
    },
  };
  /** Click a media entry in Insights: Flex calls HistoricalReportingView with its URL. */
  flex.click = (url) => flex.actions.HistoricalReportingView(url, (p) => flex.originalCalls.push(p));
  return flex;
}

export function fakeManager({ token = '', configuredUrl, uiAttributesUrl } = {}) {
  return {
    user: { token },
    strings: {},
    configuration: configuredUrl ? { mediaResolver: { url: configuredUrl } } : {},
    serviceConfiguration: { ui_attributes: uiAttributesUrl ? { mediaResolver: { url: uiAttributesUrl } } : {} },
  };
}

/** Render a Flex template the way Flex's Template does for `{{name}}` (enough for our one-variable template). */
export function renderTemplate(source, context) {
  return source.replace(/\{\{\s*(\w+)\s*\}\}/g, (_, name) => String(context[name] ?? ''));
}
