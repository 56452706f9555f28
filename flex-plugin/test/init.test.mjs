// The plugin's init against a fake Flex. Run: npm test (node's built-in runner).
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import * as served from '../../static/flex-drilldown.js';
import {
  installDrilldownHandler,
  installMediaResolver,
  NOTIFICATION_ID,
  NOTIFICATION_STRING,
  resolverUrlFor,
} from '../src/install.js';
import { fakeFlex, fakeManager, renderTemplate } from './fake-flex.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const RESOLVER = 'https://media.example.com';

function install(flex, manager, options = {}) {
  return installMediaResolver(flex, manager, { window: new EventTarget(), ...options });
}

test('the plugin installs the very handler static/ serves, not a copy', () => {
  assert.equal(installDrilldownHandler, served.installDrilldownHandler);
  // And no file of the plugin defines a handler of its own.
  const files = [];
  const walk = (dir) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      if (['node_modules', 'build', 'test'].includes(entry.name)) continue;
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (/\.(m?js|jsx|tsx?)$/.test(entry.name)) files.push(path);
    }
  };
  walk(join(HERE, '..'));
  const copies = files.filter((f) => /function\s+installDrilldownHandler|replaceAction\(\s*['"]HistoricalReportingView/.test(readFileSync(f, 'utf8')));
  assert.deepEqual(copies.map((f) => relative(join(HERE, '..'), f)), []);
});

test("init replaces HistoricalReportingView and registers one error notification with Flex's Notifications", () => {
  const flex = fakeFlex();
  const manager = fakeManager({ token: 'tok' });
  const installed = install(flex, manager, { buildTimeUrl: RESOLVER });
  assert.equal(installed.resolverUrl, RESOLVER);
  assert.equal(installed.source, 'build');
  assert.equal(typeof installed.resolve, 'function');
  assert.deepEqual(Object.keys(flex.actions), ['HistoricalReportingView']);
  assert.equal(flex.registered.length, 1);
  const [notification] = flex.registered;
  assert.equal(notification.id, NOTIFICATION_ID);
  assert.equal(notification.type, 'error');
  assert.equal(notification.content, NOTIFICATION_STRING);
  assert.equal(manager.strings[NOTIFICATION_STRING], '{{message}}');
});

test('a refusal is shown through showNotification, in words, and nothing is sent without a token', async () => {
  const flex = fakeFlex();
  const manager = fakeManager({ token: '' });
  let fetches = 0;
  install(flex, manager, { buildTimeUrl: RESOLVER, fetch: async () => { fetches += 1; } });
  await flex.click(`${RESOLVER}/d/abc`);
  assert.equal(fetches, 0);
  assert.equal(flex.shown.length, 1);
  assert.equal(flex.shown[0].id, NOTIFICATION_ID);
  const text = renderTemplate(manager.strings[NOTIFICATION_STRING], flex.shown[0].context);
  assert.match(text, /Your Flex session has expired/);
});

test("the resolver's own refusal sentence reaches the notification", async () => {
  const flex = fakeFlex();
  const calls = [];
  install(flex, fakeManager({ token: 'tok' }), {
    buildTimeUrl: RESOLVER,
    fetch: async (url, init) => {
      calls.push({ url, init });
      return new Response(JSON.stringify({ error: { code: 'revoked', message: 'Access to this media has been revoked.' } }), { status: 403 });
    },
  });
  await flex.click(`${RESOLVER}/d/abc`);
  assert.equal(calls[0].url, `${RESOLVER}/api/v1/resolve`);
  assert.equal(calls[0].init.headers.Authorization, 'Bearer tok');
  assert.equal(flex.shown[0].context.message, 'Access to this media has been revoked.');
});

test("other URLs go to Flex's own handler and no token leaves", async () => {
  const flex = fakeFlex();
  let fetches = 0;
  install(flex, fakeManager({ token: 'tok' }), { buildTimeUrl: RESOLVER, fetch: async () => { fetches += 1; } });
  await flex.click('https://crm.example.com/ticket/1');
  await flex.click('https://media.example.com.evil.test/d/abc');
  assert.deepEqual(flex.originalCalls, ['https://crm.example.com/ticket/1', 'https://media.example.com.evil.test/d/abc']);
  assert.equal(fetches, 0);
  assert.deepEqual(flex.shown, []);
});

test('the build-time URL wins over the Flex configuration, which is used when the build names none', () => {
  const both = fakeManager({ configuredUrl: 'https://other.example.com' });
  assert.deepEqual(resolverUrlFor(both, RESOLVER), { url: RESOLVER, source: 'build' });
  assert.deepEqual(resolverUrlFor(both, ''), { url: 'https://other.example.com', source: 'configuration' });
  assert.deepEqual(resolverUrlFor(both, undefined), { url: 'https://other.example.com', source: 'configuration' });
  const uiAttributes = fakeManager({ uiAttributesUrl: 'https://ui.example.com' });
  assert.deepEqual(resolverUrlFor(uiAttributes, undefined), { url: 'https://ui.example.com', source: 'configuration' });
  assert.equal(resolverUrlFor(fakeManager(), undefined), null);
});

test('the configured URL is the one the handler claims links under', async () => {
  const flex = fakeFlex();
  const installed = install(flex, fakeManager({ token: '', configuredUrl: 'https://other.example.com' }));
  assert.equal(installed.source, 'configuration');
  await flex.click(`${RESOLVER}/d/abc`); // the build-time default is not in force
  assert.deepEqual(flex.originalCalls, [`${RESOLVER}/d/abc`]);
  await flex.click('https://other.example.com/d/abc');
  assert.match(flex.shown[0].context.message, /session has expired/);
});

test("without any resolver URL nothing is installed: Flex keeps its drilldown", () => {
  const flex = fakeFlex();
  const errors = [];
  const original = console.error;
  console.error = (message) => errors.push(message);
  try {
    assert.equal(install(flex, fakeManager()), null);
  } finally {
    console.error = original;
  }
  assert.deepEqual(flex.actions, {});
  assert.deepEqual(flex.registered, []);
  assert.match(errors[0], /FLEX_APP_MEDIA_RESOLVER_URL/);
});

test('a resolver URL that is not a plain base URL is refused at init', () => {
  assert.throws(() => install(fakeFlex(), fakeManager(), { buildTimeUrl: 'https://media.example.com/?x=1' }), /plain base URL/);
});
