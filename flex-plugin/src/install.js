// The plugin's init, kept free of Flex imports so a node test can drive it with a fake `flex` and `manager`.
//
// The handler itself is static/flex-drilldown.js, the very file the resolver serves: webpack bundles it from
// there (webpack.config.js lets this one file past the src/ boundary), so the plugin and static/ cannot drift.
import { installDrilldownHandler } from '../../static/flex-drilldown.js';

export { installDrilldownHandler }; // re-exported so a test can prove it is static/'s very function

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
 * @typedef {object} FlexManagerLike the parts of Flex's Manager the plugin reads
 * @property {{ token?: string }} [user]
 * @property {Record<string, string>} [strings] Flex's templates (notification content is a key in them)
 * @property {{ mediaResolver?: { url?: string } }} [configuration] appConfig merged with ui_attributes
 * @property {{ ui_attributes?: { mediaResolver?: { url?: string } } }} [serviceConfiguration]
 */

function text(value) {
  return typeof value === 'string' && value.trim() ? value.trim() : '';
}

/** `mediaResolver.url` from the Flex configuration: `manager.configuration`, else the raw `ui_attributes`. */
export function configuredUrl(manager) {
  return text(manager?.configuration?.mediaResolver?.url) ||
    text(manager?.serviceConfiguration?.ui_attributes?.mediaResolver?.url);
}

/**
 * The resolver's URL: the build-time value (it is part of the reviewed bundle), else the Flex configuration's
 * `mediaResolver.url` (appConfig.js locally; `ui_attributes` through the Flex Configuration API in an account).
 *
 * @param {FlexManagerLike} manager
 * @param {string} [buildTimeUrl]
 * @returns {{ url: string, source: 'build' | 'configuration' } | null}
 */
export function resolverUrlFor(manager, buildTimeUrl) {
  if (text(buildTimeUrl)) return { url: text(buildTimeUrl), source: 'build' };
  if (configuredUrl(manager)) return { url: configuredUrl(manager), source: 'configuration' };
  return null;
}

/**
 * Register the refusal notification with Flex's own Notifications and return a `notify(message)` for it.
 *
 * @param {typeof import('@twilio/flex-ui')} flex
 * @param {FlexManagerLike} manager
 * @param {number} [timeoutMs]
 * @returns {(message: string) => void}
 */
export function flexNotifier(flex, manager, timeoutMs = 10000) {
  // Flex renders a string content that names a template through Handlebars; `{{message}}` is HTML-escaped.
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
 * @param {FlexManagerLike} manager Flex's Manager
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
  const configured = configuredUrl(manager);
  if (chosen.source === 'build' && configured && configured !== chosen.url) {
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
