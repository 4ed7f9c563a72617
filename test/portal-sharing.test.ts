// The portal's Sharing and My key pages in a real browser against a real server and its embedded
// chain: a patient creates a key (or uses an injected wallet), links it, builds a Consent in plain
// words, signs it, and a practitioner's reads follow; a withdrawal sent straight to the contract
// stops them. Also: the directory a patient searches, refusals with their messages, key backup.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Wallet } from 'ethers';
import { ConsentRegistryClient } from '../src/consent/index.js';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { launchChromium, portalPage, portalServer, screenshots, scrollsSideways, seriousViolations, signIn, WITH_CHROMIUM, type PortalServer } from './portal-helpers.js';
import { codeFlow, newCredentials, patientToken, UNUSED_REDIRECT_URI } from './smart-helpers.js';

const PASS = 'purple elephant dances slowly';
const LOINC = 'http://loinc.org';
const CATEGORY = 'http://terminology.hl7.org/CodeSystem/observation-category';
const vital = { coding: [{ system: CATEGORY, code: 'vital-signs' }] };
const lab = { coding: [{ system: CATEGORY, code: 'laboratory' }] };
/** A practitioner's read withheld by consent: 403 where they may know it exists, else 404. */
const refused = (status: number) => status === 403 || status === 404;
const ids = (b: { entry?: Array<{ resource: { resourceType: string; id: string } }> }) => (b.entry ?? []).map((e) => `${e.resource.resourceType}/${e.resource.id}`).sort();

describe('patient portal: Sharing and My key', WITH_CHROMIUM, () => {
  let s: PortalServer;
  let browser: Browser;
  let rpcUrl: string;
  let dr: string;
  let drTok: string;
  let backupFile: string;
  const P: Record<string, string> = {};
  let ada: { id: string; username: string; password: string };

  const obs = async (patient: string, code: string, display: string, category: unknown, extra: Record<string, unknown> = {}) => {
    const r = await s.fhir('POST', 'Observation', {
      resourceType: 'Observation', status: 'final', category: [category], subject: { reference: `Patient/${patient}` },
      code: { coding: [{ system: LOINC, code, display }], text: display }, effectiveDateTime: '2025-03-01T08:00:00Z',
      valueQuantity: { value: 70, unit: 'x' }, performer: [{ reference: `Practitioner/${dr}` }], ...extra,
    });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    return r.body.id as string;
  };
  const drReads = async (id: string) => (await s.fhir('GET', `Observation/${id}`, undefined, drTok)).status;
  const rpc = async (method: string, params: unknown[] = []) => {
    const r = await fetch(rpcUrl, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }) });
    const j = await r.json() as { result?: unknown; error?: { message: string } };
    if (j.error) throw new Error(j.error.message);
    return j.result;
  };
  async function until(what: string, fn: () => Promise<boolean>, ms = 8000): Promise<void> {
    const end = Date.now() + ms;
    while (!(await fn())) {
      if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  async function accessible(page: Page, what: string): Promise<void> {
    assert.deepEqual(await seriousViolations(page), [], `${what}: axe`);
    await page.setViewportSize({ width: 375, height: 740 });
    assert.equal(await scrollsSideways(page), false, `${what} at 375 px`);
    await page.setViewportSize({ width: 1280, height: 800 });
  }

  before(async () => {
    s = await portalServer();
    browser = await launchChromium();
    rpcUrl = s.app.ledger.status().rpcUrl!;
    const prac = await s.fhir('POST', 'Practitioner', { resourceType: 'Practitioner', name: [{ given: ['Xavier'], family: 'Nguyen' }] });
    dr = prac.body.id;
    await s.fhir('POST', 'Organization', { resourceType: 'Organization', name: 'Riverside Clinic' });
    ada = await s.addPatient({ given: 'Ada', family: 'Lovelace' });
    P.heart = await obs(ada.id, '8867-4', 'Heart rate', vital);
    P.secret = await obs(ada.id, '85354-9', 'Blood pressure', vital, { meta: { security: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'R' }] } });
    P.glucose = await obs(ada.id, '2339-0', 'Glucose', lab);
    const other = await s.addPatient({ given: 'Otto', family: 'Other' });
    P.other = other.id;
    P.otherObs = await obs(other.id, '8867-4', 'Heart rate', vital);
    const creds = newCredentials('dr');
    await s.app.auth.registry.addUser({ ...creds, fhirUser: `Practitioner/${dr}` });
    const { client } = s.app.auth.registry.addClient({ type: 'public', redirectUris: [UNUSED_REDIRECT_URI], scope: 'user/*.rs' });
    drTok = (await codeFlow(s, { clientId: client.clientId, redirectUri: UNUSED_REDIRECT_URI, scope: 'user/*.rs', ...creds })).token.body.access_token;
  });
  after(async () => { await browser?.close(); await s?.close(); });

  test('a patient token finds care professionals and organizations by name, and nothing of another patient through them', async () => {
    const tok = await patientToken(s, { patientId: ada.id, scope: 'patient/*.rs patient/Consent.cruds' });
    const found = await s.fhir('GET', 'Practitioner?name=nguy', undefined, tok);
    assert.equal(found.status, 200);
    assert.deepEqual(ids(found.body), [`Practitioner/${dr}`]);
    const org = await s.fhir('GET', 'Organization?name=riverside', undefined, tok);
    assert.equal(org.body.entry?.length, 1);
    // The practitioner performed Otto's Observation too: none of it comes back to Ada.
    const rev = await s.fhir('GET', `Practitioner?name=nguy&_revinclude=Observation:performer`, undefined, tok);
    assert.deepEqual(ids(rev.body), [`Observation/${P.glucose}`, `Observation/${P.heart}`, `Observation/${P.secret}`, `Practitioner/${dr}`].sort());
    const chained = await s.fhir('GET', 'Observation?performer.name=nguy', undefined, tok);
    assert.ok(!ids(chained.body).includes(`Observation/${P.otherObs}`));
    assert.equal((await s.fhir('GET', `Observation/${P.otherObs}`, undefined, tok)).status, 404);
    assert.equal((await s.fhir('GET', `Patient/${P.other}`, undefined, tok)).status, 404);
  });

  test('journey: an in-browser key, a Consent for vital signs except restricted, signed; revoked straight on the contract', async () => {
    const ctx = await browser.newContext({ acceptDownloads: true });
    const page = await portalPage(ctx);
    await signIn(page, s.url, ada);
    await page.getByRole('link', { name: 'My key' }).click();
    await page.getByRole('heading', { name: 'Key linked to your record' }).waitFor();
    await page.getByText('None yet').waitFor();
    await page.getByLabel('Choose a passphrase').fill(PASS);
    await page.getByLabel('Type it again').fill(PASS);
    await page.getByRole('button', { name: 'Create my key' }).click();
    await page.getByText('Your key is created').waitFor();
    const stored = await page.evaluate(() => ({ local: Object.keys(localStorage), keystore: localStorage.getItem('custos-keystore') }));
    assert.ok(stored.keystore && !stored.keystore.includes(PASS), 'only the encrypted keystore is stored');
    assert.equal(JSON.parse(stored.keystore).crypto?.kdfparams?.n ?? JSON.parse(stored.keystore).Crypto?.kdfparams?.n, 65536);
    assert.ok(stored.local.every((k) => !/token|SMART/i.test(k)), 'no token in localStorage');
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download a backup' }).click()]);
    backupFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'custos-portal-key-')), download.suggestedFilename());
    await download.saveAs(backupFile);
    assert.match(download.suggestedFilename(), /^custos-key-[0-9a-f]{8}\.json$/);
    const address = (await Wallet.fromEncryptedJson(fs.readFileSync(backupFile, 'utf8'), PASS)).address;
    await page.locator('#pass-link').fill(PASS);
    await page.getByRole('button', { name: 'Link this key' }).click();
    await page.getByText('Your key is now linked').waitFor();
    await page.getByText(address).first().waitFor();
    assert.match(await page.locator('main').innerText(), /in use in this browser/);

    await page.getByRole('link', { name: 'Sharing' }).click();
    await page.getByText('You have not shared your record with anyone yet.').waitFor();
    await page.getByLabel('Name of the person, organization or care team').fill('Nguy');
    await page.getByRole('button', { name: 'Search' }).click();
    await page.getByLabel('Dr Xavier Nguyen (a care professional)').check();
    await page.getByLabel(/^Vital signs/).check();
    await page.getByLabel('Anything marked as very restricted information').uncheck();
    await accessible(page, 'sharing form');
    await screenshots(page, 'sharing-form');
    await page.getByRole('button', { name: 'Review' }).click();
    const review = await page.locator('ul.review').innerText();
    assert.match(review, /Dr Xavier Nguyen \(a care professional\) may see: vital signs/);
    assert.match(review, /Except restricted \(sensitive\) information/);
    assert.doesNotMatch(review, /very restricted/);
    await page.getByRole('button', { name: 'Save and go on to sign' }).click();
    await page.getByRole('heading', { name: 'Sign to put this permission in force' }).waitFor();
    await page.getByText('What exactly is signed').click();
    assert.match(await page.locator('pre.signing').innerText(), /"primaryType": "Grant"/);
    assert.ok(refused(await drReads(P.heart!)), 'nothing before the signature');
    await page.getByLabel('Passphrase of your key').fill(PASS);
    await page.getByRole('button', { name: 'Sign and put in force' }).click();
    await page.locator('.badge', { hasText: 'In force' }).waitFor();

    assert.equal(await drReads(P.heart!), 200, 'the vital sign');
    assert.ok(refused(await drReads(P.secret!)), 'the restricted vital sign');
    assert.ok(refused(await drReads(P.glucose!)), 'the lab result');
    const search = await s.fhir('GET', `Observation?patient=${ada.id}`, undefined, drTok);
    assert.deepEqual(ids(search.body), [`Observation/${P.heart}`]);

    await page.getByLabel('Who', { exact: true }).selectOption({ label: 'Dr Xavier Nguyen (a care professional)' });
    await page.getByLabel('Can they see').selectOption({ label: 'My heart rate (latest)' });
    await page.getByRole('button', { name: 'Ask' }).click();
    await page.getByText('Yes: Dr Xavier Nguyen (a care professional) can see your heart rate.').waitFor();
    await page.getByLabel('Can they see').selectOption({ label: 'My glucose (latest)' });
    await page.getByRole('button', { name: 'Ask' }).click();
    await page.getByText(/^No: Dr Xavier Nguyen .* cannot see your glucose/).waitFor();
    await accessible(page, 'sharing');
    await screenshots(page, 'sharing');

    // The patient sees the practitioner's reads in "Who saw my data".
    await s.app.audit?.flush();
    await page.getByRole('link', { name: 'Who saw my data' }).click();
    await page.getByText(/Xavier Nguyen read your heart rate/).first().waitFor();
    await page.getByText(/Xavier Nguyen tried to read your (glucose|.*) but was refused/).first().waitFor();
    await page.getByRole('link', { name: 'Sharing' }).click();

    await page.getByRole('button', { name: 'Withdraw' }).click();
    await page.getByLabel('Passphrase of your key').fill(PASS);
    await page.getByRole('button', { name: 'Withdraw directly on the ledger' }).click();
    await page.locator('.badge', { hasText: 'Withdrawn' }).waitFor({ timeout: 20_000 });
    await until('the practitioner to be refused', async () => refused(await drReads(P.heart!)));
    // ... and the refusal after the withdrawal in "Who saw my data".
    await s.app.audit?.flush();
    await page.getByRole('link', { name: 'Who saw my data' }).click();
    await page.getByText(/Xavier Nguyen tried to read your heart rate but was refused/).first().waitFor();
    assert.deepEqual(page.problems, []);
    await ctx.close();
  });

  test('the backup file restores the key in another browser (a wrong passphrase is refused first): it is the linked key there too, and cancels an operator key recovery', async () => {
    const ctx = await browser.newContext();
    const page = await portalPage(ctx);
    await signIn(page, s.url, ada);
    await page.goto(`${s.url}/portal/#/key`);
    await page.getByRole('heading', { name: 'Key linked to your record' }).waitFor();
    await page.getByLabel('Backup file').setInputFiles(backupFile);
    await page.getByLabel('Its passphrase').fill('not the passphrase');
    await page.getByRole('button', { name: 'Restore my key' }).click();
    await page.getByText('That passphrase does not open your key').waitFor();
    await page.getByLabel('Its passphrase').fill(PASS);
    await page.getByRole('button', { name: 'Restore my key' }).click();
    await page.getByText('Your key is restored from the backup.').waitFor();
    await page.getByText('in use in this browser').waitFor();
    await accessible(page, 'key');
    await screenshots(page, 'key');

    // The operator starts a key recovery; the patient sees it and cancels it with the current key.
    const adaTok = await patientToken(s, { patientId: ada.id, scope: 'patient/Consent.rs' });
    const info = (await s.fhir('GET', `Patient/${ada.id}/$consent-key`, undefined, adaTok)).body as { parameter: Array<{ name: string; valueString?: string }> };
    const get = (n: string) => info.parameter.find((x) => x.name === n)?.valueString!;
    const operatorKey = fs.readFileSync(path.join(s.config.dataDir, 'keys', 'consent-relayer.key'), 'utf8').trim();
    const operator = await ConsentRegistryClient.connect({ rpcUrl, address: get('contractAddress'), privateKey: operatorKey });
    try { await operator.proposeRecovery(get('pid'), Wallet.createRandom().address); } finally { operator.close(); }
    await page.reload();
    await page.getByText('Someone asked to replace your key.').waitFor();
    await page.locator('#pass-recovery').fill(PASS);
    await page.getByRole('button', { name: 'Cancel this key change' }).click();
    await page.getByText('The key change is cancelled.').waitFor();
    assert.equal(await page.getByText('Someone asked to replace your key.').count(), 0);
    assert.deepEqual(page.problems, []);
    await ctx.close();
  });

  test('an injected EIP-1193 wallet links and signs; a wrong key and an expired signature are refused with their messages', async () => {
    const bea = await s.addPatient({ given: 'Bea', family: 'Wallet' });
    const heart = await obs(bea.id, '8867-4', 'Heart rate', vital);
    const consent = (kind: string) => s.fhir('POST', 'Consent', {
      resourceType: 'Consent', status: 'active',
      scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
      category: [{ coding: [{ system: LOINC, code: '59284-0' }] }], patient: { reference: `Patient/${bea.id}` },
      policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTIN' }] },
      provision: { actor: [{ role: { coding: [{ code: 'IRCP' }] }, reference: { reference: `Practitioner/${dr}`, display: 'Dr Xavier Nguyen' } }], provision: [{ type: 'permit', class: [{ system: 'http://hl7.org/fhir/resource-types', code: kind }] }] },
    });
    const first = await consent('Observation');
    assert.equal(first.status, 201, JSON.stringify(first.body));
    const right = new Wallet(Wallet.createRandom().privateKey);
    const wrong = new Wallet(Wallet.createRandom().privateKey);
    let inUse = right;
    const ctx: BrowserContext = await browser.newContext();
    await ctx.exposeFunction('__testWallet', async (method: string, params: unknown[]) => {
      switch (method) {
        case 'eth_requestAccounts': case 'eth_accounts': return [inUse.address];
        case 'eth_signTypedData_v4': {
          const td = JSON.parse(params[1] as string);
          const { EIP712Domain: _d, ...types } = td.types;
          return inUse.signTypedData(td.domain, types, td.message);
        }
        default: return rpc(method, params);
      }
    });
    // As a string: tsx would wrap a function's inner arrows in a helper the page does not have.
    await ctx.addInitScript({ content: 'window.ethereum = { request: ({ method, params }) => window.__testWallet(method, params || []) };' });
    const page = await portalPage(ctx);
    await signIn(page, s.url, bea);
    await page.goto(`${s.url}/portal/#/key`);
    await page.getByRole('button', { name: 'Use my wallet' }).click();
    await page.getByText(`account ${right.address}`).waitFor();
    await page.getByRole('button', { name: 'Link this key' }).click();
    await page.getByText('Your key is now linked').waitFor();

    await page.getByRole('link', { name: 'Sharing' }).click();
    await page.getByRole('button', { name: 'Sign to put in force' }).click();
    await page.getByText('Signed with your wallet').waitFor();
    await page.getByRole('button', { name: 'Sign and put in force' }).click();
    await page.locator('.badge', { hasText: 'In force' }).waitFor();
    assert.equal(await drReads(heart), 200);

    // A second permission: first the wallet holds another key, then the signature comes too late.
    const second = await consent('Condition');
    assert.equal(second.status, 201, JSON.stringify(second.body));
    await page.reload();
    inUse = wrong;
    await page.getByRole('button', { name: 'Sign to put in force' }).click();
    await page.getByRole('button', { name: 'Sign and put in force' }).click();
    await page.getByText('is not the one linked to your record').waitFor();
    inUse = right;
    await page.getByRole('button', { name: 'Not now' }).click();
    await page.getByRole('button', { name: 'Sign to put in force' }).click();
    await page.getByRole('button', { name: 'Sign and put in force' }).waitFor();
    await rpc('evm_increaseTime', [7200]);
    await rpc('evm_mine');
    await page.getByRole('button', { name: 'Sign and put in force' }).click();
    await page.getByText('The signature came too late').waitFor();
    await page.getByRole('button', { name: 'Prepare the signature again' }).click();
    await page.getByRole('button', { name: 'Sign and put in force' }).click();
    await page.locator('.badge', { hasText: 'Waiting for your signature' }).waitFor({ state: 'detached' });
    assert.equal(await page.locator('.badge', { hasText: 'In force' }).count(), 2);
    assert.deepEqual(page.problems, []);
    await ctx.close();
  });
});
