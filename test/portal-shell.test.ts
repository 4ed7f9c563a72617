// The portal's shell and its server side: the self-registered public client, static serving with
// a strict CSP, sign-in through the server's pages, and the accessibility bar on the sign-in pages.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Browser } from 'playwright-core';
import { endSession, launchChromium, loginAndAllow, portalPage, portalServer, screenshots, scrollsSideways, seriousViolations, signIn, WITH_CHROMIUM, type PortalServer } from './portal-helpers.js';
import { PORTAL_SCOPE, portalRedirectUris } from '../src/portal/index.js';

describe('patient portal: server side', () => {
  let s: PortalServer;
  before(async () => { s = await portalServer({ LEDGER: 'off' }); });
  after(async () => { await s?.close(); });

  test('the server registers the portal as a public PKCE client of its own, once', async () => {
    const cfg = await (await fetch(`${s.url}/portal/config.json`)).json() as { clientId: string; fhirBase: string; scope: string };
    assert.equal(cfg.fhirBase, s.base);
    assert.equal(cfg.scope, PORTAL_SCOPE);
    const client = s.app.auth.registry.getClient(cfg.clientId)!;
    assert.equal(client.type, 'public');
    assert.equal(client.name, 'Custos patient portal');
    assert.ok(client.redirectUris.includes(`${s.url}/portal/`));
    const again = s.app.auth.registry.listClients().filter((c) => c.name === 'Custos patient portal');
    assert.equal(again.length, 1);
  });

  test('redirect URIs cover the loopback names a person may type', () => {
    assert.deepEqual(portalRedirectUris('http://127.0.0.1:8080/fhir'), ['http://127.0.0.1:8080/portal/', 'http://localhost:8080/portal/', 'http://[::1]:8080/portal/']);
    assert.deepEqual(portalRedirectUris('https://ehr.example/base/fhir'), ['https://ehr.example/portal/']);
  });

  test('index.html and assets come with a strict CSP: no inline script or style, no other hosts', async () => {
    const r = await fetch(`${s.url}/portal/`);
    assert.equal(r.status, 200);
    const csp = r.headers.get('content-security-policy')!;
    assert.match(csp, /script-src 'self'(;|$)/);
    assert.match(csp, /style-src 'self'(;|$)/);
    assert.match(csp, new RegExp(`connect-src 'self' ${s.url.replace(/[.[\]]/g, '\\$&')}(;|$)`));
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|\*/);
    const html = await r.text();
    assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/, 'no inline script');
    assert.doesNotMatch(html, /<style|style=/, 'no inline style');
    assert.doesNotMatch(html, /https?:\/\//, 'no asset from another host');
    const asset = html.match(/src="(\/portal\/assets\/[^"]+\.js)"/)![1]!;
    const js = await fetch(`${s.url}${asset}`);
    assert.equal(js.status, 200);
    assert.match(js.headers.get('cache-control')!, /immutable/);
    assert.equal((await fetch(`${s.url}/portal/assets/nothing.js`)).status, 404);
  });

  test('/portal without its slash redirects to /portal/', async () => {
    const r = await fetch(`${s.url}/portal`, { redirect: 'manual' });
    assert.equal(r.status, 301);
    assert.equal(r.headers.get('location'), '/portal/');
  });
});

describe('patient portal: sign-in in a real browser', WITH_CHROMIUM, () => {
  let s: PortalServer;
  let browser: Browser;
  before(async () => { s = await portalServer(); browser = await launchChromium(); });
  after(async () => { await browser?.close(); await s?.close(); });

  test('the chain RPC is the one other origin the portal may reach, and the chain answers the portal origin', async () => {
    const cfg = await (await fetch(`${s.url}/portal/config.json`)).json() as { chainRpcUrl: string };
    const rpc = new URL(cfg.chainRpcUrl).origin;
    const csp = (await fetch(`${s.url}/portal/`)).headers.get('content-security-policy')!;
    assert.match(csp, new RegExp(`connect-src 'self' ${s.url.replace(/[.[\]]/g, '\\$&')} ${rpc.replace(/[.[\]]/g, '\\$&')}(;|$)`));
    const pre = await fetch(cfg.chainRpcUrl, { method: 'POST', headers: { Origin: s.url, 'Content-Type': 'application/json' }, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'eth_chainId', params: [] }) });
    assert.equal(pre.headers.get('access-control-allow-origin'), s.url);
  });

  test('a patient signs in through the server pages and lands in the portal with their name; no axe violation', async () => {
    const patient = await s.addPatient({ given: 'Ada', family: 'Lovelace', birthDate: '1980-12-10', gender: 'female' });
    const ctx = await browser.newContext();
    const page = await portalPage(ctx);
    await page.goto(`${s.url}/portal/`);
    assert.deepEqual(await seriousViolations(page), [], 'welcome page');
    await screenshots(page, 'welcome');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL(/\/auth\/interaction\//);
    assert.deepEqual(await seriousViolations(page), [], 'login page');
    await screenshots(page, 'login');
    await page.getByLabel('Username').fill(patient.username);
    await page.getByLabel('Password').fill(patient.password);
    await page.getByRole('button', { name: /sign in/i }).click();
    await page.getByRole('button', { name: 'Allow what is ticked' }).waitFor();
    const text = await page.locator('main').innerText();
    assert.match(text, /Custos patient portal/);
    assert.match(text, /Read and search all of your health records/);
    assert.deepEqual(await seriousViolations(page), [], 'approval page');
    await screenshots(page, 'approve');
    await page.setViewportSize({ width: 375, height: 740 });
    assert.equal(await scrollsSideways(page), false, 'approval page at 375 px');
    await page.setViewportSize({ width: 1280, height: 800 });
    await page.getByRole('button', { name: 'Allow what is ticked' }).click();
    await page.waitForURL(/\/portal\//);
    await page.getByRole('banner').getByText('Ada Lovelace').waitFor();
    assert.equal(new URL(page.url()).search, '', 'no code or state left in the address');
    const stored = await page.evaluate(() => ({ local: Object.keys(localStorage), session: Object.keys(sessionStorage) }));
    assert.deepEqual(stored.local, [], 'nothing in localStorage');
    assert.ok(stored.session.length > 0, 'the session lives in sessionStorage');
    assert.deepEqual(page.problems, []);
    await ctx.close();
  });

  test('a session that has ended leads back to sign-in and to the same page', async () => {
    const patient = await s.addPatient({ given: 'Grace', family: 'Hopper' });
    const ctx = await browser.newContext();
    const page = await portalPage(ctx);
    await signIn(page, s.url, patient);
    await page.getByRole('link', { name: 'Sharing' }).click();
    await endSession(page);
    await page.getByRole('link', { name: 'Sharing' }).waitFor();
    await page.getByRole('button', { name: 'Sign in again' }).click();
    await loginAndAllow(page, patient);
    await page.waitForURL(/\/portal\/#\/sharing/, { waitUntil: 'commit' });
    await page.getByText('Grace Hopper').waitFor();
    assert.deepEqual(page.problems, []);
    await ctx.close();
  });
});
