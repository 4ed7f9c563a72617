// "My data" and "Is this value genuine?" in a real browser: device readings posted as a device
// would, grouped with their latest value and device, a chart that asks for a date range with the
// right number of points, and the browser's own proof check passing on a genuine value and naming
// the failing step once a byte of the stored row has changed.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import type { Browser, Page } from 'playwright-core';
import { launchChromium, portalPage, portalServer, screenshots, scrollsSideways, seriousViolations, signIn, WITH_CHROMIUM, type PortalServer } from './portal-helpers.js';
import { FIXTURES, WITH_FIXTURES } from './helpers.js';
import { contentHash as serverHash } from '../src/store/content-hash.js';
import { MerkleTree } from '../src/ledger/merkle.js';
import { contentHash as browserHash } from '../web/src/verify/content-hash.js';
import { rootFromInclusionProof } from '../web/src/verify/merkle.js';
import { toHex } from '../web/src/verify/hex.js';

const HOUR = 3600e3;
const DAY = 24 * HOUR;
const LOINC = 'http://loinc.org';
const UCUM = 'http://unitsofmeasure.org';

function jsonFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? jsonFiles(path.join(dir, e.name)) : e.name.endsWith('.json') ? [path.join(dir, e.name)] : []));
}

describe('portal verify: the browser\'s hashing and Merkle walk agree with the server\'s', () => {
  test('content hash of tricky values', async () => {
    const values: unknown[] = [
      { resourceType: 'Observation', valueQuantity: { value: 1e21 }, b: [0.1 + 0.2, -0, 1e-7, 123456789012345680000], a: 'é\u2028\u0000"\\/ 😀' },
      { z: { y: [null, true, false, {}], x: [] }, '\u20ac': 1, '\r': 2, 'A': 3, a: 4 },
    ];
    for (const v of values) assert.equal(await browserHash(v), serverHash(v));
  });

  test('content hash of every third-party fixture', WITH_FIXTURES, async () => {
    const files = jsonFiles(FIXTURES);
    assert.ok(files.length > 50, 'fixtures found');
    for (const f of files) {
      const v = JSON.parse(fs.readFileSync(f, 'utf8')) as unknown;
      assert.equal(await browserHash(v), serverHash(v), f);
    }
  });

  test('audit paths of every leaf of trees of 1..33 lead to the server tree\'s root', async () => {
    for (let n = 1; n <= 33; n++) {
      const entries = Array.from({ length: n }, (_, i) => new Uint8Array(32).fill(i + 1));
      const tree = new MerkleTree(entries);
      for (let i = 0; i < n; i++) {
        const root = await rootFromInclusionProof(entries[i]!, i, n, tree.inclusionProof(i));
        assert.equal(root && toHex(root), tree.root.toString('hex'), `n=${n} i=${i}`);
      }
      if (n > 1) assert.equal(await rootFromInclusionProof(entries[0]!, 0, n, []), undefined, 'a short path leads nowhere');
    }
  });
});

describe('portal: my data and "is this value genuine?" in a real browser', WITH_CHROMIUM, () => {
  let s: PortalServer;
  let browser: Browser;
  let page: Page & { problems: string[] };
  let patient: { id: string; username: string; password: string };
  const now0 = Date.now();
  // Off the 4-hour grid by half an hour, so no reading sits on a period's edge while the test runs.
  const hrTimes = Array.from({ length: 360 }, (_, i) => now0 - (4 * i * HOUR + 0.5 * HOUR));
  const bpTimes = Array.from({ length: 120 }, (_, i) => now0 - (12 * i * HOUR + 2 * HOUR));
  const spo2Times = Array.from({ length: 60 }, (_, i) => now0 - (i * DAY + 3 * HOUR));
  let latestHr: string;
  let conditionId: string;

  const inLast = (times: number[], days: number, endOffsetDays = 0) => {
    const end = Date.now() - endOffsetDays * DAY;
    return times.filter((t) => t >= end - days * DAY && t < end).length;
  };

  async function post(resource: Record<string, unknown>): Promise<string> {
    const r = await s.fhir('POST', resource.resourceType as string, resource);
    assert.equal(r.status, 201, JSON.stringify(r.body));
    return r.body.id as string;
  }

  async function anchored(ref: string): Promise<void> {
    for (let i = 0; i < 100; i++) {
      const r = await s.fhir('GET', `${ref}/$verify`);
      if (r.body?.parameter?.find((p: { name: string }) => p.name === 'status')?.valueCode === 'anchored') return;
      await new Promise((res) => setTimeout(res, 200));
    }
    throw new Error(`${ref} was not anchored`);
  }

  before(async () => {
    s = await portalServer();
    browser = await launchChromium();
    patient = await s.addPatient({ given: 'Rosa', family: 'Marsh', birthDate: '1961-04-02', gender: 'female' });
    const subject = { reference: `Patient/${patient.id}` };
    const cuff = await post({ resourceType: 'Device', patient: subject, deviceName: [{ name: 'Omron Evolv', type: 'user-friendly-name' }], manufacturer: 'Omron', modelNumber: 'BP7000' });
    const watch = await post({ resourceType: 'Device', patient: subject, deviceName: [{ name: 'Pulse watch', type: 'user-friendly-name' }], manufacturer: 'Acme', modelNumber: 'PW-2' });
    const vital = [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-signs' }] }];
    const obs = (code: string, display: string, t: number, device: string, rest: object) => ({
      resourceType: 'Observation', status: 'final', category: vital, code: { coding: [{ system: LOINC, code, display }] },
      subject, device: { reference: `Device/${device}` }, effectiveDateTime: new Date(t).toISOString(), ...rest,
    });
    const all = [
      ...hrTimes.map((t, i) => obs('8867-4', 'Heart rate', t, watch, { valueQuantity: { value: 60 + (i % 30), unit: 'beats/minute', system: UCUM, code: '/min' } })),
      ...bpTimes.map((t, i) => obs('85354-9', 'Blood pressure panel', t, cuff, {
        component: [
          { code: { coding: [{ system: LOINC, code: '8480-6', display: 'Systolic blood pressure' }] }, valueQuantity: { value: 120 + (i % 10), unit: 'mmHg', system: UCUM, code: 'mm[Hg]' } },
          { code: { coding: [{ system: LOINC, code: '8462-4', display: 'Diastolic blood pressure' }] }, valueQuantity: { value: 80 - (i % 5), unit: 'mmHg', system: UCUM, code: 'mm[Hg]' } },
        ],
      })),
      ...spo2Times.map((t) => obs('59408-5', 'Oxygen saturation', t, watch, { valueQuantity: { value: 97, unit: '%', system: UCUM, code: '%' } })),
    ];
    // As a gateway would: batches of readings in transaction Bundles.
    for (let i = 0; i < all.length; i += 150) {
      const r = await s.fhir('POST', '', { resourceType: 'Bundle', type: 'transaction', entry: all.slice(i, i + 150).map((resource) => ({ resource, request: { method: 'POST', url: 'Observation' } })) });
      assert.equal(r.status, 200, JSON.stringify(r.body).slice(0, 500));
    }
    const latest = await s.fhir('GET', `Observation?patient=${patient.id}&code=${LOINC}|8867-4&_sort=-date&_count=1`);
    latestHr = latest.body.entry[0].resource.id;
    conditionId = await post({ resourceType: 'Condition', subject, code: { text: 'High blood pressure' }, clinicalStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-clinical', code: 'active' }] }, onsetDateTime: '2019-03-01' });
    await post({ resourceType: 'MedicationStatement', subject, status: 'active', medicationCodeableConcept: { text: 'Amlodipine 5 mg tablet' }, dosage: [{ text: 'One tablet each morning' }], effectiveDateTime: '2019-03-05' });
    await anchored(`Observation/${latestHr}`);
    await anchored(`Condition/${conditionId}`);
    page = await portalPage(await browser.newContext());
    await signIn(page, s.url, patient);
  });
  after(async () => { await browser?.close(); await s?.close(); });

  const card = (name: string) => page.locator('section.reading', { has: page.getByRole('heading', { name, exact: true }) });

  async function chartCount(name: string, expected: number): Promise<void> {
    const fig = card(name).locator('figure.reading-chart');
    try {
      await card(name).locator(`figure.reading-chart[data-count="${expected}"]`).waitFor({ timeout: 15000 });
    } catch {
      assert.equal(Number(await fig.getAttribute('data-count')), expected, `${name}: points on the chart`);
    }
    assert.match(await fig.locator('figcaption').innerText(), new RegExp(`^${expected} readings`), 'the count is in the text alternative');
  }

  test('the readings are grouped by kind with the latest value, its time and the device; the chart shows the readings of the chosen period', async () => {
    await card('Heart rate').waitFor();
    await card('Blood pressure').waitFor();
    await card('Oxygen saturation (SpO2)').waitFor();
    const hr = await card('Heart rate').locator('.reading-latest').innerText();
    assert.match(hr, /60 beats\/minute/);
    assert.match(hr, /Measured by Pulse watch/);
    assert.match(await card('Blood pressure').locator('.reading-latest').innerText(), /120\/80 mmHg[\s\S]*Omron Evolv \(model BP7000, made by Omron\)/);
    assert.match(await card('Oxygen saturation (SpO2)').locator('.reading-latest').innerText(), /97 %/);
    assert.match(await page.locator('main').innerText(), /Rosa Marsh[\s\S]*High blood pressure[\s\S]*Amlodipine 5 mg tablet/);

    // The default period is the last 30 days.
    await chartCount('Heart rate', inLast(hrTimes, 30));
    await chartCount('Blood pressure', inLast(bpTimes, 30));
    await card('Heart rate').getByRole('button', { name: 'Last 7 days' }).click();
    await chartCount('Heart rate', inLast(hrTimes, 7));
    await card('Heart rate').getByRole('button', { name: /Earlier/ }).click();
    await chartCount('Heart rate', inLast(hrTimes, 7, 7));
    await card('Blood pressure').getByRole('button', { name: 'All' }).click();
    await chartCount('Blood pressure', bpTimes.length);
    // Both components of blood pressure are lines of the chart.
    assert.match(await card('Blood pressure').locator('figcaption').innerText(), /Systolic \(upper\): lowest 120, highest 129 mmHg; Diastolic \(lower\): lowest 76, highest 80 mmHg/);
    await card('Blood pressure').getByText('Show these readings as a table').click();
    await card('Blood pressure').locator('details table tbody tr').first().waitFor();
    assert.equal(await card('Blood pressure').locator('details table tbody tr').count(), bpTimes.length);

    assert.deepEqual(await seriousViolations(page), []);
    await screenshots(page, 'my-data');
    await page.setViewportSize({ width: 375, height: 740 });
    assert.equal(await scrollsSideways(page), false, 'no sideways scroll at 375 px');
    await page.setViewportSize({ width: 1280, height: 800 });
    assert.deepEqual(page.problems, []);
  });

  const steps = (where: ReturnType<typeof card>) => where.locator('.verify-result ol.steps li');
  async function statuses(where: ReturnType<typeof card>): Promise<Record<string, string>> {
    await where.locator('.verdict').waitFor();
    const out: Record<string, string> = {};
    for (const li of await steps(where).all()) out[(await li.getAttribute('data-step'))!] = `${await li.getAttribute('data-status')}: ${await li.innerText()}`;
    return out;
  }

  test('"Check this value" on a genuine reading passes every step, asking the chain itself', async () => {
    const hr = card('Heart rate');
    await hr.getByRole('button', { name: /Check this value/ }).click();
    const st = await statuses(hr);
    for (const k of ['fetch', 'hash', 'path', 'chain']) assert.match(st[k]!, /^passed: Passed/, `${k}: ${st[k]}`);
    assert.match(st.chain!, /Recorded on .* in block \d+ of chain \d+/);
    assert.match(await hr.locator('.verdict').innerText(), /This value is genuine/);
    await hr.scrollIntoViewIfNeeded();
    assert.deepEqual(await seriousViolations(page), []);
    await screenshots(page, 'verify');
    assert.deepEqual(page.problems, []);
  });

  test('after a byte of the stored row changes, the portal names the failing step', async () => {
    const db = new Database(path.join(s.config.dataDir, 'custos.db'));
    try {
      // The recorded fingerprint of the latest heart rate: one hex digit changed.
      const hash = db.prepare("SELECT content_hash FROM resource_version WHERE type = 'Observation' AND id = ?").pluck().get(latestHr) as string;
      db.prepare("UPDATE resource_version SET content_hash = ? WHERE type = 'Observation' AND id = ?").run((hash[0] === '0' ? '1' : '0') + hash.slice(1), latestHr);
      // One byte of the condition's ciphertext.
      const body = db.prepare("SELECT body FROM resource_version WHERE type = 'Condition' AND id = ?").pluck().get(conditionId) as Buffer;
      body[body.length - 1] ^= 0x01;
      db.prepare("UPDATE resource_version SET body = ? WHERE type = 'Condition' AND id = ?").run(body, conditionId);
    } finally {
      db.close();
    }
    const hr = card('Heart rate');
    await hr.getByRole('button', { name: /Check again/ }).click();
    await hr.locator('li[data-step="fetch"][data-status="passed"]').waitFor();
    const st = await statuses(hr);
    assert.match(st.fetch!, /^passed/);
    assert.match(st.hash!, /^failed: Failed[\s\S]*the one recorded when it was stored is/, st.hash);
    assert.match(st.path!, /^skipped: Not checked/);
    assert.match(await hr.locator('.verdict').innerText(), /could not be confirmed as genuine: step 2 failed/);
    await screenshots(page, 'verify-failed');

    const condition = page.locator('li.record-item', { hasText: 'High blood pressure' });
    await condition.getByRole('button', { name: /Check this value/ }).click();
    const cst = await statuses(condition as unknown as ReturnType<typeof card>);
    assert.match(cst.fetch!, /^failed: Failed[\s\S]*its stored copy was changed outside the server/, cst.fetch);
    assert.match(await condition.locator('.verdict').innerText(), /step 1 failed/);
    assert.deepEqual(await seriousViolations(page), []);
    assert.deepEqual(page.problems, []);
  });
});
