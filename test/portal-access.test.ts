// "Who saw my data" in a real browser: a practitioner permitted by a Consent reads one Observation
// and is refused another, a second practitioner breaks the glass with a reason, an app acts on its
// own; the patient sees each by name, in plain words, the emergency first, filters the trail by
// kind, date and person (and keeps the filters through a new sign-in), pages through it, and never
// sees another patient's accesses. Also $access-report's client names, over HTTP.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import type { AuditFacts } from '../src/audit/index.js';
import { fetchSystemToken } from './helpers.js';
import { endSession, launchChromium, loginAndAllow, portalPage, portalServer, screenshots, scrollsSideways, seriousViolations, signIn, WITH_CHROMIUM, type PortalServer } from './portal-helpers.js';
import { codeFlow, newCredentials, patientToken, UNUSED_REDIRECT_URI } from './smart-helpers.js';

const LOINC = 'http://loinc.org';
const CONFIDENTIALITY = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
const DAY_MS = 86_400_000;
// The browser runs in en-GB and UTC, so that the expected words can be written here.
const DAY = new Intl.DateTimeFormat('en-GB', { day: 'numeric', month: 'short', year: 'numeric', timeZone: 'UTC' });
const TIME = new Intl.DateTimeFormat('en-GB', { hour: '2-digit', minute: '2-digit', timeZone: 'UTC' });
const onDayAt = (iso: string) => `on ${DAY.format(new Date(iso))} at ${TIME.format(new Date(iso))}`;
const isoDay = (ms: number) => new Date(ms).toISOString().slice(0, 10);

interface Param { name: string; valueString?: string; valueInstant?: string; valueReference?: { reference?: string }; part?: Param[] }

describe('who saw my data', () => {
  let s: PortalServer;
  let browser: Browser | undefined;
  const ids: Record<string, string> = {};
  let ada: { id: string; username: string; password: string };
  let grantedAt: string;
  let pastAccess: string;
  const reason = 'Unconscious in the emergency room, no relatives reachable';

  const practitioner = async (prefix: string, given: string, family: string) =>
    (await s.fhir('POST', 'Practitioner', { resourceType: 'Practitioner', name: [{ prefix: [prefix], given: [given], family }] })).body.id as string;
  const observation = async (patient: string, code: { coding?: unknown[]; text?: string }, extra: object = {}) => {
    const r = await s.fhir('POST', 'Observation', { resourceType: 'Observation', status: 'final', subject: { reference: `Patient/${patient}` }, code, ...extra });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    return r.body.id as string;
  };
  const consent = async (patient: string, actor: string) => {
    const r = await s.fhir('POST', 'Consent', {
      resourceType: 'Consent', status: 'active',
      scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
      category: [{ coding: [{ system: LOINC, code: '59284-0' }] }], patient: { reference: `Patient/${patient}` },
      policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTIN' }] },
      provision: {
        type: 'permit', actor: [{ role: { coding: [{ code: 'IRCP' }] }, reference: { reference: `Practitioner/${actor}` } }],
        provision: [{ type: 'deny', securityLabel: [{ system: CONFIDENTIALITY, code: 'R' }] }],
      },
    });
    assert.equal(r.status, 201, JSON.stringify(r.body));
  };
  /** A practitioner user's token through the real code flow, from an app called `app`. */
  const userToken = async (practitionerId: string, app: string, breakGlass = false) => {
    const creds = newCredentials('dr');
    await s.app.auth.registry.addUser({ ...creds, fhirUser: `Practitioner/${practitionerId}`, breakGlass });
    const { client } = s.app.auth.registry.addClient({ type: 'public', name: app, redirectUris: [UNUSED_REDIRECT_URI], scope: 'user/*.rs' });
    const flow = await codeFlow(s, { clientId: client.clientId, redirectUri: UNUSED_REDIRECT_URI, scope: 'user/*.rs', ...creds });
    assert.equal(flow.token.status, 200);
    return { token: flow.token.body.access_token as string, clientId: client.clientId };
  };

  before(async () => {
    // Consents grant on their FHIR status alone here (no signing): what is shown is the audit trail.
    s = await portalServer({ LEDGER: 'off', CONSENT_CHAIN: 'off' });
    ada = await s.addPatient({ given: 'Ada', family: 'Lovelace' });
    const bob = await s.addPatient({ given: 'Bob', family: 'Other' });
    ids.bob = bob.id;
    ids.x = await practitioner('Dr', 'Jane', 'Smith');
    ids.y = await practitioner('Dr', 'Omar', 'Haddad');
    ids.z = await practitioner('Dr', 'Zed', 'Elsewhere');
    ids.bp = await observation(ada.id, { coding: [{ system: LOINC, code: '85354-9', display: 'Blood pressure' }] });
    ids.hiv = await observation(ada.id, { text: 'HIV test' }, { meta: { security: [{ system: CONFIDENTIALITY, code: 'R' }] } });
    ids.bobs = await observation(bob.id, { text: 'Cholesterol of Bob' });
    await consent(ada.id, ids.x);
    await consent(bob.id, ids.z);

    // X searches 50 times (a trail of several pages), reads the blood pressure and is refused the R-labelled test.
    const x = await userToken(ids.x, 'Clinic EHR');
    for (let i = 0; i < 50; i++) assert.equal((await s.fhir('GET', `Observation?subject=Patient/${ada.id}`, undefined, x.token)).status, 200);
    assert.equal((await s.fhir('GET', `Observation/${ids.bp}`, undefined, x.token)).status, 200);
    assert.equal((await s.fhir('GET', `Observation/${ids.hiv}`, undefined, x.token)).status, 403);
    // Y breaks the glass with a reason and reads the blood pressure under it.
    const y = await userToken(ids.y, 'Emergency department', true);
    const glass = await s.fhir('POST', `Patient/${ada.id}/$break-glass`, { resourceType: 'Parameters', parameter: [{ name: 'reason', valueString: reason }] }, y.token);
    assert.equal(glass.status, 201, JSON.stringify(glass.body));
    grantedAt = (glass.body.parameter as Param[]).find((p) => p.name === 'granted')!.valueInstant!;
    assert.equal((await s.fhir('GET', `Observation/${ids.bp}`, undefined, y.token)).status, 200);
    // An app acting on its own (no user) reads the blood pressure.
    const gateway = await fetchSystemToken(s.app.auth.endpoints.token, (jwks) => s.app.auth.registry.addClient({ type: 'backend', jwks, scope: 'system/*.rs', trusted: true, name: 'Home BP gateway' }).client.clientId, 'system/*.rs');
    assert.equal((await s.fhir('GET', `Observation/${ids.bp}`, undefined, gateway)).status, 200);
    // Z reads Bob's data: never to be seen in Ada's portal.
    const z = await userToken(ids.z, 'Other clinic');
    assert.equal((await s.fhir('GET', `Observation/${ids.bobs}`, undefined, z.token)).status, 200);
    // A read by X a month ago, as the audit recorder records any access (an earlier day for the date filter).
    pastAccess = new Date(Date.now() - 30 * DAY_MS).toISOString().slice(0, 11) + '09:15:00.000Z';
    const facts: AuditFacts = {
      interaction: 'read', status: 200, recorded: new Date(pastAccess),
      principal: { kind: 'token', clientId: x.clientId, subject: 'dr', tokenId: '', scope: 'user/*.rs', scopes: [], fhirUser: `Practitioner/${ids.x}` },
      resources: [`Observation/${ids.bp}`], patients: [`Patient/${ada.id}`], owners: { [`Observation/${ids.bp}`]: [`Patient/${ada.id}`] },
    };
    s.app.audit!.later(facts);
    await s.app.audit!.flush();
    if (!WITH_CHROMIUM.skip) browser = await launchChromium();
  });
  after(async () => { await browser?.close(); await s?.close(); });

  test('$access-report names an app acting on its own by the name it was registered under; another patient sees none of it', async () => {
    const own = await patientToken(s, { patientId: ada.id, scope: 'patient/*.rs' });
    const report = await s.fhir('GET', `Patient/${ada.id}/$access-report`, undefined, own);
    assert.equal(report.status, 200);
    const actors = (report.body.parameter as Param[]).filter((p) => p.name === 'actor');
    const gateway = actors.find((a) => a.part!.some((x) => x.name === 'name' && x.valueString === 'Home BP gateway'));
    assert.ok(gateway?.part!.some((x) => x.name === 'client'), 'the client id and its name');
    const byRef = actors.map((a) => a.part!.find((x) => x.name === 'who')?.valueReference?.reference);
    assert.ok(byRef.includes(`Practitioner/${ids.x}`) && byRef.includes(`Practitioner/${ids.y}`));
    assert.ok(!byRef.includes(`Practitioner/${ids.z}`), 'Z only touched Bob\'s data');
    // Users are named through their reference (the patient may read a Practitioner), never by a name part.
    assert.ok(actors.filter((a) => a.part!.some((x) => x.name === 'who')).every((a) => !a.part!.some((x) => x.name === 'name')));
    const other = await patientToken(s, { patientId: ids.bob!, scope: 'patient/*.rs' });
    const probe = await s.fhir('GET', `Patient/${ada.id}/$access-report`, undefined, other);
    assert.ok(probe.status === 403 || probe.status === 404, String(probe.status));
    assert.ok(!JSON.stringify(probe.body).includes('Home BP gateway'));
  });

  describe('in the browser', WITH_CHROMIUM, () => {
    let page: Page & { problems: string[] };

    const trailItems = () => page.locator('ol.trail > li').allInnerTexts();
    /** Once the trail shows the answer to the filters as they are now (the page says "Loading" until then). */
    const settled = async () => {
      await page.waitForFunction(() => !document.querySelector('.trail-count')?.textContent?.includes('Loading'));
    };

    test('signs in and shows the emergency first, then the people by name, then each access in words', async () => {
      const ctx = await browser!.newContext({ locale: 'en-GB', timezoneId: 'UTC' });
      page = await portalPage(ctx);
      await signIn(page, s.url, ada);
      await page.getByRole('link', { name: 'Who saw my data' }).click();
      await page.getByRole('heading', { name: 'Who saw my data', level: 1 }).waitFor();

      const emergency = page.locator('section.emergency');
      await emergency.getByText('Dr Omar Haddad').waitFor();
      const said = await emergency.innerText();
      assert.match(said, new RegExp(`Dr Omar Haddad opened your record in an emergency ${onDayAt(grantedAt)}`));
      assert.ok(said.includes(`Reason given: “${reason}”`) || said.includes(reason), said);
      // The people and the trail load after the emergency section: wait until both are on the page.
      await page.locator('#actors-title').waitFor();
      await page.locator('ol.trail').waitFor();
      const first = await page.evaluate(() => {
        const e = document.querySelector('section.emergency')!;
        return !!(e.compareDocumentPosition(document.getElementById('actors-title')!) & Node.DOCUMENT_POSITION_FOLLOWING)
          && !!(e.compareDocumentPosition(document.querySelector('ol.trail')!) & Node.DOCUMENT_POSITION_FOLLOWING);
      });
      assert.ok(first, 'the emergency comes before the people and the trail');
      await emergency.getByText('What they looked at (1)').click();
      await emergency.getByText(/read your blood pressure on /).waitFor();

      const actors = page.locator('ul.actors');
      await actors.getByRole('heading', { name: 'Dr Jane Smith' }).waitFor();
      const jane = actors.locator('li', { has: page.getByRole('heading', { name: 'Dr Jane Smith' }) });
      assert.match(await jane.innerText(), /Refused 1 time/);
      const omar = actors.locator('li', { has: page.getByRole('heading', { name: 'Dr Omar Haddad' }) });
      assert.match(await omar.innerText(), /Emergency access/);
      await actors.getByRole('heading', { name: 'Home BP gateway' }).waitFor();

      await settled();
      const items = await trailItems();
      const text = items.join('\n');
      assert.ok(items.some((t) => t.startsWith('Dr Jane Smith read your blood pressure on ')), text);
      assert.ok(items.some((t) => t.startsWith('Dr Jane Smith tried to read your HIV test but was refused') && /Refused/.test(t)), text);
      assert.ok(items.some((t) => t.startsWith('Dr Omar Haddad read your blood pressure') && /Emergency access/.test(t)), text);
      assert.ok(items.some((t) => t.startsWith('Dr Jane Smith searched your measurements and test results')), text);
      assert.ok(items.some((t) => t.startsWith('Home BP gateway read your blood pressure')), text);
      assert.ok(items.length >= 20 && items.length < 40, `a page at a time, more when the patient's own accesses are left out (${items.length})`);
      await page.getByRole('button', { name: 'Show more' }).waitFor();
      assert.ok(!items.some((t) => t.startsWith('You ')), 'what the patient did themself is left out unless asked for');

      // Another patient's accesses never appear.
      const body = await page.locator('main').innerText();
      for (const foreign of ['Zed', 'Elsewhere', 'Other clinic', 'Cholesterol', ids.z!, ids.bobs!]) assert.ok(!body.includes(foreign), foreign);
      assert.ok(!(await page.locator('#access-who').innerText()).includes('Zed'));

      assert.deepEqual(await seriousViolations(page), []);
      await screenshots(page, 'access');
      await page.setViewportSize({ width: 375, height: 740 });
      assert.equal(await scrollsSideways(page), false, 'no sideways scroll at 375 px');
      await page.setViewportSize({ width: 1280, height: 800 });
      assert.deepEqual(page.problems, []);
    });

    test('"Show more" follows the next pages down to the oldest access', async () => {
      const more = page.getByRole('button', { name: 'Show more' });
      let shown = (await trailItems()).length;
      for (let clicks = 0; await more.count() > 0; clicks++) {
        assert.ok(clicks < 10, 'the trail ends');
        await more.click();
        await page.waitForFunction((n) => document.querySelectorAll('ol.trail > li').length > n, shown);
        await settled();
        const now = (await trailItems()).length;
        assert.ok(now > shown);
        shown = now;
      }
      const items = await trailItems();
      assert.ok(items.length > 50, String(items.length));
      assert.equal(items.filter((t) => t.startsWith('Dr Jane Smith searched your measurements and test results')).length, 50, 'each search once');
      assert.ok(items[items.length - 1]!.startsWith(`Dr Jane Smith read your blood pressure ${onDayAt(pastAccess)}`), 'the oldest access last');
    });

    test('the kind, date and person filters change the list', async () => {
      await page.getByLabel('Refused', { exact: true }).check();
      await settled();
      // The other patient's probe of this patient's report (in the first test) was an attempt on this patient's data, by someone they cannot name.
      assert.deepEqual((await trailItems()).map((t) => t.split(' on ')[0]).sort(), [
        'Another person tried to look at who saw your data but was refused', 'Dr Jane Smith tried to read your HIV test but was refused',
      ]);

      await page.getByLabel('Everything').check();
      await page.getByLabel('Reads', { exact: true }).check();
      await settled();
      let items = await trailItems();
      assert.ok(items.length >= 4 && items.every((t) => / read your /.test(t) && !/refused/.test(t)), items.join('\n'));

      // Only the day of the old access.
      await page.getByLabel('To').fill(isoDay(Date.parse(pastAccess)));
      await settled();
      assert.deepEqual(await trailItems(), [`Dr Jane Smith read your blood pressure ${onDayAt(pastAccess)}.`]);
      // From today on: everything but the old access.
      await page.getByLabel('To').fill('');
      await page.getByLabel('From').fill(isoDay(Date.now()));
      await settled();
      items = await trailItems();
      assert.ok(!items.some((t) => t.includes(onDayAt(pastAccess))));
      assert.ok(items.some((t) => t.startsWith('Home BP gateway')));

      // One person: only theirs.
      await page.getByLabel('Who', { exact: true }).selectOption({ label: 'Dr Omar Haddad' });
      await settled();
      items = await trailItems();
      assert.ok(items.length >= 1 && items.every((t) => t.startsWith('Dr Omar Haddad read your blood pressure')), items.join('\n'));
      assert.deepEqual(page.problems, []);
    });

    test('the filters keep their values through a new sign-in', async () => {
      const from = isoDay(Date.now());
      await endSession(page);
      await page.getByRole('button', { name: 'Sign in again' }).click();
      await loginAndAllow(page, ada);
      await page.waitForURL(/\/portal\/#\/access/, { waitUntil: 'commit' });
      await page.getByRole('heading', { name: 'Who saw my data', level: 1 }).waitFor();
      await page.locator('ul.actors').waitFor();
      assert.equal(await page.getByLabel('From').inputValue(), from);
      assert.ok(await page.getByLabel('Reads', { exact: true }).isChecked());
      // (Named once the practitioner's name is read.)
      await page.waitForFunction(() => document.querySelector('#access-who option:checked')?.textContent === 'Dr Omar Haddad');
      await settled();
      const kept = await trailItems();
      assert.ok(kept.length >= 1 && kept.every((t) => t.startsWith('Dr Omar Haddad read')), kept.join('\n'));
      await page.getByRole('button', { name: 'Clear filters' }).click();
      await settled();
      assert.equal(await page.getByLabel('From').inputValue(), '');
      assert.deepEqual(page.problems, []);
    });
  });
});
