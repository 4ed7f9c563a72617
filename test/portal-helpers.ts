/**
 * Browser tests of the patient portal: Debian's Chromium driven by playwright-core (no browser
 * download), against a real server with its embedded chain. `.ci/run` installs chromium when it is
 * missing; elsewhere the tests say why they are skipped (WITH_CHROMIUM).
 */
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { testServer } from './helpers.js';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => fs.existsSync(p));
export const WITH_CHROMIUM: { skip?: string } = CHROMIUM ? {} : { skip: 'needs Chromium (apt-get install -y chromium; .ci/run installs it)' };

/** Where screenshots go (CI keeps test-results/ as artifacts). */
export const SHOTS_DIR = path.resolve('test-results/portal');

export type PortalServer = Awaited<ReturnType<typeof testServer>> & {
  /** A FHIR call with the server's trusted system token (or another token). */
  fhir<T = any>(method: string, rel: string, body?: unknown, token?: string): Promise<{ status: number; body: T }>;
  /** A Patient and a patient user for it; returns the id and the credentials. */
  addPatient(p: { given: string; family: string; birthDate?: string; gender?: string }): Promise<{ id: string; username: string; password: string }>;
};

let counter = 0;

/** A listening server with the embedded chain (consent signatures required, proofs anchored quickly). */
export async function portalServer(env: Record<string, string> = {}): Promise<PortalServer> {
  const s = await testServer({ LEDGER: 'embedded', CONSENT_SYNC_MS: '400', LEDGER_BATCH_MS: '300', ACCESS_TOKEN_TTL: '3600', ...env });
  const fhir = async (method: string, rel: string, body?: unknown, token = s.token) => {
    const r = await fetch(`${s.base}/${rel}`, {
      method, headers: { Authorization: `Bearer ${token}`, Accept: 'application/fhir+json', ...(body !== undefined ? { 'Content-Type': 'application/fhir+json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await r.text();
    return { status: r.status, body: text ? JSON.parse(text) : undefined };
  };
  const addPatient: PortalServer['addPatient'] = async (p) => {
    const created = await fhir('POST', 'Patient', { resourceType: 'Patient', name: [{ given: [p.given], family: p.family }], ...(p.birthDate ? { birthDate: p.birthDate } : {}), ...(p.gender ? { gender: p.gender } : {}) });
    if (created.status !== 201) throw new Error(`Patient not created: ${created.status} ${JSON.stringify(created.body)}`);
    const username = `${p.given.toLowerCase()}-${++counter}-${process.pid}`;
    const password = `pw-${username}-long-enough`;
    await s.app.auth.registry.addUser({ username, password, fhirUser: `Patient/${created.body.id}` });
    return { id: created.body.id as string, username, password };
  };
  return Object.assign(s, { fhir, addPatient });
}

export async function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM!,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/** A page that fails the test on any script error or Content-Security-Policy violation. */
export async function portalPage(context: BrowserContext): Promise<Page & { problems: string[] }> {
  const page = await context.newPage() as Page & { problems: string[] };
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content.Security.Policy|Refused to/i.test(m.text())) page.problems.push(`CSP: ${m.text()}`);
  });
  return page;
}

/** Signs in through the server's own login and approval pages; returns once the portal shows the record. */
export async function signIn(page: Page, origin: string, who: { username: string; password: string }): Promise<void> {
  await page.goto(`${origin}/portal/`);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await loginAndAllow(page, who);
  await page.waitForURL(/\/portal\//);
  await page.getByRole('navigation', { name: 'Portal' }).waitFor();
}

/** On the server's login page (after the portal sent the browser there): signs in and allows what is asked. */
export async function loginAndAllow(page: Page, who: { username: string; password: string }): Promise<void> {
  await page.waitForURL(/\/auth\/interaction\//);
  await page.getByLabel('Username').fill(who.username);
  await page.getByLabel('Password').fill(who.password);
  await page.getByRole('button', { name: /sign in/i }).click();
  await page.getByRole('button', { name: 'Allow what is ticked' }).click();
}

/** Ends the portal's session as a long pause would: token, refresh token and the server's login session gone; then reloads. */
export async function endSession(page: Page): Promise<void> {
  await page.context().clearCookies();
  await page.evaluate(() => {
    for (const k of Object.keys(sessionStorage)) {
      const v = sessionStorage.getItem(k)!;
      if (v.includes('access_token')) sessionStorage.setItem(k, v.replace(/"access_token":"[^"]+"/, '"access_token":"expired"').replace(/"refresh_token":"[^"]+"/, '"refresh_token":"expired"').replace(/"expiresAt":\d+/, '"expiresAt":1'));
    }
  });
  await page.reload();
}

const axeSource = fs.readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

export interface AxeViolation { id: string; impact: string | null; help: string; nodes: string[] }

/** axe-core's serious and critical violations on the page as it is now (WCAG 2.x A/AA rules and best practices). */
export async function seriousViolations(page: Page): Promise<AxeViolation[]> {
  // Evaluated through the DevTools protocol, which the page's CSP does not govern.
  await page.evaluate(axeSource);
  const found = await page.evaluate(async () => {
    const axe = (window as unknown as { axe: { run(ctx: Document, o: object): Promise<{ violations: Array<{ id: string; impact: string | null; help: string; nodes: Array<{ target: string[] }> }> }> } }).axe;
    const r = await axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(' ')) }));
  });
  return found.filter((v) => v.impact === 'serious' || v.impact === 'critical');
}

/** Saves a full-page screenshot at desktop (1280) and phone (375) width under test-results/portal/. */
export async function screenshots(page: Page, name: string): Promise<string[]> {
  fs.mkdirSync(SHOTS_DIR, { recursive: true });
  const original = page.viewportSize() ?? { width: 1280, height: 800 };
  const files: string[] = [];
  for (const [label, size] of [['desktop', { width: 1280, height: 800 }], ['phone', { width: 375, height: 740 }]] as const) {
    await page.setViewportSize(size);
    const file = path.join(SHOTS_DIR, `${name}-${label}.png`);
    await page.screenshot({ path: file, fullPage: true });
    files.push(file);
  }
  await page.setViewportSize(original);
  return files;
}

/** Whether the page scrolls sideways at its current width (unusable at 375 px if so). */
export async function scrollsSideways(page: Page): Promise<boolean> {
  return page.evaluate(() => document.documentElement.scrollWidth > document.documentElement.clientWidth + 1);
}
