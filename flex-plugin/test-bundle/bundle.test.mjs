// The built bundle (build/plugin-media-resolver.js), run as Flex runs a plugin: the script is evaluated in a page
// whose `Twilio.Flex.Plugins.init` receives the plugin class; Flex then calls `init(flex, manager)`.
// Run by `npm run build` right after `flex-plugin build`, with the same environment.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import vm from 'node:vm';

import { fakeFlex, fakeManager } from '../test/fake-flex.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const BUNDLE = join(ROOT, 'build', 'plugin-media-resolver.js');
const HANDLER = join(ROOT, '..', 'static', 'flex-drilldown.js');
const BUILD_URL = (process.env.FLEX_APP_MEDIA_RESOLVER_URL || '').trim();
const CONFIGURED = 'https://configured.example.com';

function loadBundle() {
  assert.ok(existsSync(BUNDLE), `${BUNDLE} exists (run flex-plugin build first)`);
  const plugins = [];
  const page = new EventTarget();
  page.location = { origin: 'https://flex.twilio.com' };
  page.open = () => null;
  const context = {
    console: { log() {}, warn() {}, error() {} },
    URL, AbortController, setTimeout, clearTimeout, Response, fetch: globalThis.fetch,
    Twilio: { Flex: { Plugins: { init: (plugin) => plugins.push(plugin) } } },
  };
  context.window = Object.assign(page, { Twilio: context.Twilio });
  context.self = context.window;
  vm.createContext(context);
  vm.runInContext(readFileSync(BUNDLE, 'utf8'), context, { filename: BUNDLE });
  return { plugins, context };
}

test('the bundle registers exactly one plugin with Flex, named as the package', () => {
  const { plugins } = loadBundle();
  assert.equal(plugins.length, 1);
  const plugin = new plugins[0]();
  assert.equal(plugin.name, 'MediaResolverPlugin');
  assert.equal(plugin.uniqueName, 'plugin-media-resolver');
  assert.equal(typeof plugin.init, 'function');
});

test("the bundle carries static/flex-drilldown.js's sentences (the served handler was bundled)", () => {
  const bundle = readFileSync(BUNDLE, 'utf8');
  const source = readFileSync(HANDLER, 'utf8');
  const block = source.slice(source.indexOf('const MESSAGES = {'), source.indexOf('};', source.indexOf('const MESSAGES = {')));
  const sentences = [...block.matchAll(/:\s*"([^"]+)"/g)].map((m) => m[1]);
  assert.ok(sentences.length >= 9, 'found the handler sentences');
  for (const sentence of sentences) assert.ok(bundle.includes(sentence), sentence);
});

test('init in the bundle installs the handler and shows refusals with Notifications', async () => {
  const { plugins } = loadBundle();
  const flex = fakeFlex();
  const manager = fakeManager({ token: '', configuredUrl: CONFIGURED });
  await new plugins[0]().init(flex, manager);
  assert.deepEqual(Object.keys(flex.actions), ['HistoricalReportingView']);
  assert.equal(flex.registered.length, 1);
  const base = BUILD_URL ? BUILD_URL.replace(/\/+$/, '') : CONFIGURED; // the build-time URL wins when there is one
  await flex.click('https://crm.example.com/ticket/1');
  assert.deepEqual(flex.originalCalls, ['https://crm.example.com/ticket/1']);
  await flex.click(`${base}/d/abc`);
  assert.equal(flex.shown.length, 1);
  assert.match(flex.shown[0].context.message, /session has expired/);
  if (BUILD_URL && BUILD_URL !== CONFIGURED) {
    await flex.click(`${CONFIGURED}/d/abc`);
    assert.equal(flex.originalCalls.length, 2, 'links of the configured URL are not claimed when the build names one');
  }
});
