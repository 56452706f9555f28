// The plugin's init, kept free of Flex imports so a node test can drive it with a fake `flex` and `manager`.
//
// The handler itself is static/flex-drilldown.js, the very file the resolver serves: webpack bundles it from
// there (webpack.config.js lets this one file past the src/ boundary), so the plugin and static/ cannot drift.
import { installDrilldownHandler } from '../../static/flex-drilldown.js';

export const NOTIFICATION_ID = 'MediaResolverRefused';
/** The manager.strings key of the notification's template; `{{message}}` is the handler's sentence. */
export const NOTIFICATION_STRING = 'MediaResolverRefused';

/**
 * @typedef {object} MediaResolverOptions
 * @property {string} [buildTimeUrl] the resolver's RESOLVER_PUBLIC_URL baked in at build time
 *   (FLEX_APP_MEDIA_RESOLVER_URL); when set it wins over the Flex configuration.
 * @property {(url: string) => (Window | null)} [open] how windows open; default window.open(url, "_blank")
 * @property {typeof fetch} [fetch] default globalThis.fetch
 * @property {Window} [window] where postMessage events arrive; default globalThis.window
 * @property {number} [timeoutMs] how long a refusal stays on screen; default 10000
 */

/**
 * @typedef {object} Installed
 * @property {string} resolverUrl the URL the handler sends tokens to
 * @property {'build' | 'configuration'} source where that URL came from
 * @property {(link: string) => Promise<object>} resolve resolve a `/d/` link with the current token
 */

/**
 * The resolver's URL: the build-time value, else the Flex configuration's `mediaResolver.url`
 * (set through the Flex Configuration API's `ui_attributes`, which Flex merges into `manager.configuration`).
 *
 * @param {{ configuration?: { mediaResolver?: { url?: string } } }} manager
 * @param {string} [buildTimeUrl]
 * @returns {{ url: string, source: 'build' | 'configuration' } | null}
 */
export function resolverUrlFor(manager, buildTimeUrl) {
  if (typeof buildTimeUrl === 'string' && buildTimeUrl.trim()) return { url: buildTimeUrl.trim(), source: 'build' };
  const configured = manager?.configuration?.mediaResolver?.url;
  if (typeof configured === 'string' && configured.trim()) return { url: configured.trim(), source: 'configuration' };
  return null;
}

/**
 * Register the refusal notification with Flex's own Notifications and return a `notify(message)` for it.
 *
 * @param {typeof import('@twilio/flex-ui')} flex
 * @param {{ strings?: Record<string, string> }} manager
 * @param {number} [timeoutMs]
 * @returns {(message: string) => void}
 */
export function flexNotifier(flex, manager, timeoutMs = 10000) {
  if (manager.strings && !manager.strings[NOTIFICATION_STRING]) manager.strings[NOTIFICATION_STRING] = '{{message}}';
  flex.Notifications.registerNotification({
    id: NOTIFICATION_ID,
    content: NOTIFICATION_STRING,
    type: flex.NotificationType.error,
    closeButton: true,
    timeout: timeoutMs,
  });
  return (message) => flex.Notifications.showNotification(NOTIFICATION_ID, { message });
}

/**
 * What the plugin's init does: install the handler in place of `HistoricalReportingView`'s drilldown.
 * Without a resolver URL nothing is installed (Flex keeps its own handler) and the reason is logged.
 *
 * @param {typeof import('@twilio/flex-ui')} flex
 * @param {import('@twilio/flex-ui').Manager} manager
 * @param {MediaResolverOptions} [options]
 * @returns {Installed | null}
 */
export function installMediaResolver(flex, manager, options = {}) {
  const { buildTimeUrl, timeoutMs, ...handlerOptions } = options;
  const chosen = resolverUrlFor(manager, buildTimeUrl);
  if (!chosen) {
    console.error(
      '[plugin-media-resolver] no resolver URL: build with FLEX_APP_MEDIA_RESOLVER_URL or set ' +
        'ui_attributes.mediaResolver.url in the Flex configuration; media links stay with Flex.',
    );
    return null;
  }
  const configured = manager?.configuration?.mediaResolver?.url;
  if (chosen.source === 'build' && typeof configured === 'string' && configured.trim() && configured.trim() !== chosen.url) {
    console.warn(`[plugin-media-resolver] the Flex configuration names ${configured}; using the build-time ${chosen.url}`);
  }
  const { resolve } = installDrilldownHandler({
    ...handlerOptions,
    Actions: flex.Actions,
    manager,
    resolverUrl: chosen.url,
    notify: flexNotifier(flex, manager, timeoutMs),
  });
  return { resolverUrl: chosen.url, source: chosen.source, resolve };
}
