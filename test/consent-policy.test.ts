import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Bundle, Consent, ConsentProvision, Observation, Parameters } from '@medplum/fhirtypes';
import { backendKeyPair, clientAssertion, FHIR_JSON, testServer, tokenForm } from './helpers.js';
import { codeFlow, newCredentials, patientToken, UNUSED_REDIRECT_URI } from './smart-helpers.js';

type Server = Awaited<ReturnType<typeof testServer>>;
const LOINC = 'http://loinc.org';
const CONF = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
const ID_SYS = 'urn:custos:test:consent';

/**
 * SMART scopes ∩ patient Consent, through real HTTP with CONSENT_CHAIN=off (the chain has its own
 * tests): a matrix of provisions against reads, searches (_include, _revinclude, chains, _total,
 * compartments), history, conditional operations, Bundles and writes.
 */
describe('consent decides what practitioners, organizations and devices see (CONSENT_BASE=deny)', () => {
  let server: Server;
  const id: Record<string, string> = {};
  const tok: Record<string, string> = {};

  const call = async (token: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}) => {
    const res = await fetch(`${server.base}/${path}`, {
      method, headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': FHIR_JSON } : {}), ...headers }, body: body ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    return { status: res.status, text, body: text ? JSON.parse(text) : undefined };
  };
  const admin = async (method: string, path: string, body?: unknown) => {
    const r = await call(server.token, method, path, body);
    assert.ok(r.status < 300, `${method} ${path}: ${r.status} ${r.text}`);
    return r.body;
  };
  const obs = (patient: string, code: string, date: string, extra: Partial<Observation> = {}): Observation => ({
    resourceType: 'Observation', status: 'final', subject: { reference: `Patient/${patient}` },
    code: { coding: [{ system: LOINC, code }] }, effectiveDateTime: date, valueQuantity: { value: 70, unit: '/min' }, ...extra,
  });
  const consent = (patient: string, provision: ConsentProvision, extra: Partial<Consent> = {}): Consent => ({
    resourceType: 'Consent', status: 'active',
    scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
    category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
    patient: { reference: `Patient/${patient}` }, dateTime: '2024-01-01', policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTIN' }] }, provision, ...extra,
  });
  const actor = (reference: string) => ({ role: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP' }] }, reference: { reference } });
  const ids = (b: Bundle) => (b.entry ?? []).map((e) => `${e.resource!.resourceType}/${e.resource!.id}`).sort();
  const searchIds = async (token: string, path: string) => {
    const r = await call(token, 'GET', path);
    assert.equal(r.status, 200, r.text);
    return ids(r.body as Bundle);
  };

  async function userToken(practitioner: string, scope: string): Promise<string> {
    const registry = server.app.auth.registry;
    const creds = newCredentials('dr');
    await registry.addUser({ ...creds, fhirUser: `Practitioner/${practitioner}` });
    const { client } = registry.addClient({ type: 'public', redirectUris: [UNUSED_REDIRECT_URI], scope });
    const flow = await codeFlow(server, { clientId: client.clientId, redirectUri: UNUSED_REDIRECT_URI, scope, ...creds });
    assert.equal(flow.token.status, 200, JSON.stringify(flow.token.body));
    return flow.token.body.access_token as string;
  }
  async function backendToken(scope: string, extra: { actor?: string; trusted?: boolean } = {}): Promise<string> {
    const key = await backendKeyPair();
    const { client } = server.app.auth.registry.addClient({ type: 'backend', jwks: key.jwks, scope, ...extra });
    const endpoint = server.app.auth.endpoints.token;
    const res = await fetch(endpoint, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(tokenForm(await clientAssertion(key, client.clientId, endpoint), scope)) });
    assert.equal(res.status, 200);
    return ((await res.json()) as { access_token: string }).access_token;
  }

  before(async () => {
    server = await testServer({ CONSENT_BASE: 'deny' });
    for (const [k, family] of [['A', 'Alpha'], ['B', 'Bravo'], ['C', 'Charlie']] as const) {
      id[k] = (await admin('POST', 'Patient', { resourceType: 'Patient', name: [{ family }] })).id;
    }
    for (const k of ['D', 'E', 'F']) id[k] = (await admin('POST', 'Practitioner', { resourceType: 'Practitioner', name: [{ family: `Dr${k}` }] })).id;
    id.O = (await admin('POST', 'Organization', { resourceType: 'Organization', name: 'Clinic O' })).id;
    id.R = (await admin('POST', 'PractitionerRole', { resourceType: 'PractitionerRole', active: true, practitioner: { reference: `Practitioner/${id.F}` }, organization: { reference: `Organization/${id.O}` } })).id;
    id.encA = (await admin('POST', 'Encounter', { resourceType: 'Encounter', status: 'finished', class: { code: 'AMB' }, subject: { reference: `Patient/${id.A}` } })).id;
    id.obsA1 = (await admin('POST', 'Observation', obs(id.A!, '8867-4', '2024-03-01', { encounter: { reference: `Encounter/${id.encA}` }, identifier: [{ system: ID_SYS, value: 'a1' }] }))).id;
    id.obsA2 = (await admin('POST', 'Observation', obs(id.A!, '75622-1', '2024-05-01', { meta: { security: [{ system: CONF, code: 'R' }] } }))).id;
    id.obsA3 = (await admin('POST', 'Observation', obs(id.A!, '8867-4', '2019-05-01'))).id;
    id.condA = (await admin('POST', 'Condition', { resourceType: 'Condition', subject: { reference: `Patient/${id.A}` }, code: { text: 'asthma' } })).id;
    id.obsB1 = (await admin('POST', 'Observation', obs(id.B!, '8867-4', '2024-03-02', { identifier: [{ system: ID_SYS, value: 'b1' }] }))).id;
    id.obsC1 = (await admin('POST', 'Observation', obs(id.C!, '8867-4', '2024-03-03'))).id;
    id.obsC2 = (await admin('POST', 'Observation', obs(id.C!, '2339-0', '2024-03-03'))).id;
    id.dev = (await admin('POST', 'Device', { resourceType: 'Device', patient: { reference: `Patient/${id.A}` } })).id;
    id.devB = (await admin('POST', 'Device', { resourceType: 'Device', patient: { reference: `Patient/${id.B}` } })).id;

    // A: Dr D may see everything except restricted data and conditions; Clinic O sees 2024 Observations; the device writes Observations.
    id.CA1 = (await admin('POST', 'Consent', consent(id.A!, {
      type: 'permit', actor: [actor(`Practitioner/${id.D}`)],
      provision: [
        { type: 'deny', securityLabel: [{ system: CONF, code: 'R' }] },
        { type: 'deny', class: [{ system: 'http://hl7.org/fhir/resource-types', code: 'Condition' }] },
      ],
    }))).id;
    id.CA2 = (await admin('POST', 'Consent', consent(id.A!, {
      type: 'permit', actor: [actor(`Organization/${id.O}`)], action: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentaction', code: 'access' }] }],
      class: [{ system: 'http://hl7.org/fhir/resource-types', code: 'Observation' }], dataPeriod: { start: '2024-01-01', end: '2024-12-31' },
    }))).id;
    id.CA3 = (await admin('POST', 'Consent', consent(id.A!, {
      type: 'permit', actor: [actor(`Device/${id.dev}`)], action: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentaction', code: 'collect' }] }],
      class: [{ system: 'http://hl7.org/fhir/resource-types', code: 'Observation' }],
    }))).id;
    // B: Dr D's permit has expired; a permit for payment purposes does not apply to treatment.
    await admin('POST', 'Consent', consent(id.B!, { type: 'permit', actor: [actor(`Practitioner/${id.D}`)], period: { start: '2020-01-01', end: '2021-01-01' } }));
    await admin('POST', 'Consent', consent(id.B!, { type: 'permit', actor: [actor(`Practitioner/${id.D}`)], purpose: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'HPAYMT' }] }));
    // B: not understood (data meaning "related"): grants nothing.
    await admin('POST', 'Consent', consent(id.B!, { type: 'permit', actor: [actor(`Practitioner/${id.E}`)], data: [{ meaning: 'related', reference: { reference: `Patient/${id.B}` } }] }));
    // C: deny all, except Dr D may see heart rates (a permit nested in a deny).
    await admin('POST', 'Consent', consent(id.C!, {
      type: 'deny', provision: [{ type: 'permit', actor: [actor(`Practitioner/${id.D}`)], code: [{ coding: [{ system: LOINC, code: '8867-4' }] }] }],
    }));

    tok.D = await userToken(id.D!, 'user/*.cruds');
    tok.E = await userToken(id.E!, 'user/*.rs');
    tok.F = await userToken(id.F!, 'user/*.rs');
    tok.org = await backendToken('system/*.rs', { actor: `Organization/${id.O}` });
    tok.untrusted = await backendToken('system/*.rs');
    tok.device = await backendToken('system/Observation.c system/Device.u system/Condition.c', { actor: `Device/${id.dev}` });
    tok.patientA = await patientToken(server, { patientId: id.A!, scope: 'patient/*.rs' });
  });
  after(async () => { await server?.close(); });

  it('reads: permitted 200; withheld from a patient the actor may know 403; otherwise 404, like a missing resource', async () => {
    assert.equal((await call(tok.D!, 'GET', `Observation/${id.obsA1}`)).status, 200);
    assert.equal((await call(tok.D!, 'GET', `Patient/${id.A}`)).status, 200);
    const labelled = await call(tok.D!, 'GET', `Observation/${id.obsA2}`);
    assert.equal(labelled.status, 403);
    assert.match(labelled.text, /withheld by the patient's consent/);
    assert.equal((await call(tok.D!, 'GET', `Condition/${id.condA}`)).status, 403);
    const unknown = await call(tok.D!, 'GET', `Observation/${id.obsB1}`);
    const missing = await call(tok.D!, 'GET', 'Observation/does-not-exist');
    assert.equal(unknown.status, 404);
    assert.equal(unknown.text.replace(id.obsB1!, 'X'), missing.text.replace('does-not-exist', 'X'));
    assert.equal((await call(tok.D!, 'GET', `Patient/${id.B}`)).status, 404, 'expired and wrong-purpose permits grant nothing');
    assert.equal((await call(tok.D!, 'GET', `Observation/${id.obsC1}`)).status, 200, 'permit nested in a deny');
    assert.equal((await call(tok.D!, 'GET', `Observation/${id.obsC2}`)).status, 403, 'the rest of a deny');
    assert.equal((await call(tok.D!, 'GET', `Observation/${id.obsA1}/_history/1`)).status, 200);
    assert.equal((await call(tok.D!, 'GET', `Observation/${id.obsB1}/_history/1`)).status, 404);
    assert.equal((await call(tok.D!, 'GET', `Observation/${id.obsB1}/$verify`)).status, 404, 'operations check access to their target first');
    assert.equal((await call(tok.D!, 'GET', `Observation/${id.obsA2}/_history/1/$verify`)).status, 403);
    assert.notEqual((await call(tok.D!, 'GET', `Observation/${id.obsA1}/$verify`)).status, 404);
    // Practitioner E: only a Consent the engine does not understand names E.
    assert.equal((await call(tok.E!, 'GET', `Patient/${id.B}`)).status, 404);
    assert.equal((await call(tok.E!, 'GET', `Observation/${id.obsA1}`)).status, 404);
    // Shared (non-patient) data is not consent-governed.
    assert.equal((await call(tok.E!, 'GET', `Organization/${id.O}`)).status, 200);
  });

  it('searches carry the consent inside the query: matches, _total, paging, _summary=count', async () => {
    assert.deepEqual(await searchIds(tok.D!, 'Observation?code=8867-4'), [`Observation/${id.obsA1}`, `Observation/${id.obsA3}`, `Observation/${id.obsC1}`].sort());
    const total = await call(tok.D!, 'GET', 'Observation?_total=accurate&_count=1');
    assert.equal(total.body.total, 3, 'obsA1, obsA3, obsC1 (not the labelled one, not B, not C\'s other)');
    assert.equal(total.body.entry.length, 1);
    const seen = new Set<string>();
    let next: string | undefined = `${server.base}/Observation?_count=1`;
    while (next) {
      const page: Bundle = (await call(tok.D!, 'GET', next.slice(server.base.length + 1))).body;
      for (const e of page.entry ?? []) seen.add(`Observation/${e.resource!.id}`);
      next = page.link?.find((l) => l.relation === 'next')?.url;
    }
    assert.deepEqual([...seen].sort(), [`Observation/${id.obsA1}`, `Observation/${id.obsA3}`, `Observation/${id.obsC1}`].sort());
    assert.equal((await call(tok.D!, 'GET', 'Observation?_summary=count')).body.total, 3);
    // A paging link carries no authority: the trusted client's next page, replayed by Dr D, is decided for Dr D.
    const trustedPage: Bundle = (await call(server.token, 'GET', 'Observation?code=8867-4&_count=1&_total=accurate')).body;
    const link = trustedPage.link!.find((l) => l.relation === 'next')!.url;
    const replayed: Bundle = (await call(tok.D!, 'GET', link.slice(server.base.length + 1))).body;
    assert.equal(replayed.total, 3);
    for (const e of replayed.entry ?? []) assert.ok([id.obsA1, id.obsA3, id.obsC1].includes(e.resource!.id!));
    assert.equal((await call(tok.D!, 'GET', 'Patient?_summary=count')).body.total, 1, 'A; C\'s permit for Dr D is only for heart rates');
    // Organization O (through Dr F's role, and a client acting for O): 2024 Observations of A only.
    const forO = [`Observation/${id.obsA1}`, `Observation/${id.obsA2}`].sort();
    assert.deepEqual(await searchIds(tok.F!, 'Observation'), forO);
    assert.deepEqual(await searchIds(tok.org!, 'Observation'), forO);
    assert.deepEqual(await searchIds(tok.F!, 'Patient'), []);
    assert.deepEqual(await searchIds(tok.untrusted!, 'Observation'), [], 'a system client with no actor sees no patient data');
    assert.deepEqual(await searchIds(tok.E!, 'Observation'), []);
  });

  it('_include, _revinclude, chains and compartment searches never reach what consent withholds', async () => {
    const inc = await searchIds(tok.D!, `Observation?_id=${id.obsA1},${id.obsB1}&_include=Observation:subject&_include=Observation:encounter`);
    assert.deepEqual(inc, [`Encounter/${id.encA}`, `Observation/${id.obsA1}`, `Patient/${id.A}`].sort());
    const rev = await searchIds(tok.D!, `Patient?_id=${id.A},${id.B}&_revinclude=Observation:subject&_revinclude=Condition:subject`);
    assert.deepEqual(rev, [`Observation/${id.obsA1}`, `Observation/${id.obsA3}`, `Patient/${id.A}`].sort());
    // Organization O may see A's 2024 Observations but not A's Patient resource, not even as an include.
    assert.deepEqual(await searchIds(tok.F!, `Observation?_id=${id.obsA1}&_include=Observation:subject`), [`Observation/${id.obsA1}`]);
    assert.deepEqual(await searchIds(tok.D!, 'Observation?subject:Patient.name=Bravo'), []);
    assert.deepEqual(await searchIds(tok.D!, 'Observation?subject:Patient.name=Alpha'), [`Observation/${id.obsA1}`, `Observation/${id.obsA3}`].sort());
    // O may not see Patient A, so it cannot search A's Observations by A's name either.
    assert.deepEqual(await searchIds(tok.F!, 'Observation?subject:Patient.name=Alpha'), []);
    assert.deepEqual(await searchIds(tok.D!, `Patient/${id.B}/Observation`), []);
    assert.deepEqual(await searchIds(tok.D!, `Patient/${id.A}/Observation`), [`Observation/${id.obsA1}`, `Observation/${id.obsA3}`].sort());
  });

  it('history: instance and type history are filtered; system history is refused', async () => {
    const typeHistory: Bundle = (await call(tok.D!, 'GET', 'Observation/_history?_count=100')).body;
    const seen = new Set((typeHistory.entry ?? []).map((e) => e.fullUrl!.split('/').slice(-2).join('/')));
    assert.deepEqual([...seen].sort(), [`Observation/${id.obsA1}`, `Observation/${id.obsA3}`, `Observation/${id.obsC1}`].sort());
    assert.equal(typeHistory.total, 3);
    assert.equal((await call(tok.D!, 'GET', `Observation/${id.obsB1}/_history`)).status, 404);
    assert.equal((await call(tok.D!, 'GET', '_history')).status, 403);
  });

  it('writes: permitted creates and updates; others refused without touching anything', async () => {
    const made = await call(tok.D!, 'POST', 'Observation', obs(id.A!, '8867-4', '2024-06-01'));
    assert.equal(made.status, 201, made.text);
    const forB = await call(tok.D!, 'POST', 'Observation', obs(id.B!, '8867-4', '2024-06-01'));
    assert.equal(forB.status, 403);
    assert.deepEqual(await searchIds(server.token, 'Observation?subject=Patient/' + id.B + '&date=2024-06-01'), [], 'the refused create rolled back');
    assert.equal((await call(tok.D!, 'PUT', `Observation/${id.obsB1}`, { ...obs(id.B!, '8867-4', '2024-03-02'), id: id.obsB1 })).status, 404);
    assert.equal((await call(tok.D!, 'DELETE', `Observation/${id.obsB1}`)).status, 404);
    // Conditional delete cannot reach B's Observation through its identifier.
    const cond = await call(tok.D!, 'DELETE', `Observation?identifier=${ID_SYS}|b1`);
    assert.equal(cond.status, 204);
    assert.equal((await call(server.token, 'GET', `Observation/${id.obsB1}`)).status, 200, 'still there');
    // Moving A's Observation to B is refused (the new content is not permitted) and rolls back.
    const moved = await call(tok.D!, 'PUT', `Observation/${id.obsA3}`, { ...obs(id.B!, '8867-4', '2019-05-01'), id: id.obsA3 });
    assert.equal(moved.status, 403);
    assert.equal((await call(server.token, 'GET', `Observation/${id.obsA3}`)).body.subject.reference, `Patient/${id.A}`);
    // Bundle entries are decided one by one.
    const batch = await call(tok.D!, 'POST', '', {
      resourceType: 'Bundle', type: 'batch',
      entry: [{ request: { method: 'GET', url: `Observation/${id.obsA1}` } }, { request: { method: 'GET', url: `Observation/${id.obsB1}` } }],
    });
    assert.equal(batch.status, 200);
    assert.deepEqual(batch.body.entry.map((e: { response: { status: string } }) => e.response.status.slice(0, 3)), ['200', '404']);
  });

  it('a device client writes only Observations about its own patient, and its own Device', async () => {
    const mine = await call(tok.device!, 'POST', 'Observation', obs(id.A!, '8867-4', '2024-07-01'));
    assert.equal(mine.status, 201, mine.text);
    assert.equal((await call(tok.device!, 'POST', 'Observation', obs(id.B!, '8867-4', '2024-07-01'))).status, 403);
    assert.equal((await call(tok.device!, 'POST', 'Condition', { resourceType: 'Condition', subject: { reference: `Patient/${id.A}` }, code: { text: 'x' } })).status, 403);
    const own = await call(tok.device!, 'PUT', `Device/${id.dev}`, { resourceType: 'Device', id: id.dev, patient: { reference: `Patient/${id.A}` }, status: 'active' });
    assert.equal(own.status, 200, own.text);
    assert.equal((await call(tok.device!, 'PUT', `Device/${id.devB}`, { resourceType: 'Device', id: id.devB, patient: { reference: `Patient/${id.A}` } })).status, 403);
    assert.equal((await call(tok.device!, 'PUT', `Device/${id.dev}`, { resourceType: 'Device', id: id.dev, patient: { reference: `Patient/${id.B}` } })).status, 403);
  });

  it('the patient is not limited by consent, and can ask why an actor may or may not see something', async () => {
    assert.equal((await call(tok.patientA!, 'GET', `Observation/${id.obsA2}`)).status, 200);
    assert.equal((await call(tok.patientA!, 'GET', `Condition/${id.condA}`)).status, 200);
    const why = await call(tok.patientA!, 'GET', `Patient/${id.A}/$explain-access?actor=Practitioner/${id.D}&resource=Observation/${id.obsA2}`);
    assert.equal(why.status, 200, why.text);
    const p = why.body as Parameters;
    assert.equal(p.parameter!.find((x) => x.name === 'decision')!.valueCode, 'deny');
    const prov = p.parameter!.find((x) => x.name === 'provision')!.part!;
    assert.equal(prov.find((x) => x.name === 'path')!.valueString, 'Consent.provision.provision[0]');
    assert.equal(prov.find((x) => x.name === 'consent')!.valueReference!.reference, `Consent/${id.CA1}`);
    const ok = await call(tok.patientA!, 'GET', `Patient/${id.A}/$explain-access?actor=Practitioner/${id.F}&resource=Observation/${id.obsA1}`);
    assert.equal(ok.body.parameter.find((x: { name: string }) => x.name === 'decision').valueCode, 'permit', 'F acts for Organization O through its role');
    assert.ok(ok.body.parameter.some((x: { name: string; valueString?: string }) => x.name === 'actsAs' && x.valueString === `Organization/${id.O}`));
    assert.equal((await call(tok.D!, 'GET', `Patient/${id.A}/$explain-access?actor=Practitioner/${id.D}&resource=Observation`)).status, 403);
  });

  it('a Consent the engine does not understand is stored, $validate and create say which element, and it grants nothing', async () => {
    const odd = consent(id.B!, { type: 'permit', actor: [actor(`Practitioner/${id.E}`)], data: [{ meaning: 'dependents', reference: { reference: `Patient/${id.B}` } }] });
    const v = await call(server.token, 'POST', 'Consent/$validate', odd);
    assert.equal(v.status, 200);
    assert.match(JSON.stringify(v.body.issue), /Consent\.provision\.data\[0\]\.meaning dependents is not supported/);
    const created = await call(server.token, 'POST', 'Consent', odd, { prefer: 'return=OperationOutcome' });
    assert.equal(created.status, 201);
    assert.equal(created.body.issue[0].severity, 'warning');
    assert.equal((await call(tok.E!, 'GET', `Patient/${id.B}`)).status, 404);
  });

  it('break-the-glass: refused without the flag; with it, time-boxed read access that overrides deny, recorded for the patient', async () => {
    const registry = server.app.auth.registry;
    const creds = newCredentials('er');
    await registry.addUser({ ...creds, fhirUser: `Practitioner/${id.E}`, breakGlass: true });
    const { client } = registry.addClient({ type: 'public', redirectUris: [UNUSED_REDIRECT_URI], scope: 'user/*.rs' });
    const er = (await codeFlow(server, { clientId: client.clientId, redirectUri: UNUSED_REDIRECT_URI, scope: 'user/*.rs', ...creds })).token.body.access_token as string;
    const reason = { resourceType: 'Parameters', parameter: [{ name: 'reason', valueString: 'unconscious in the emergency room' }] };
    assert.equal((await call(tok.D!, 'POST', `Patient/${id.B}/$break-glass`, reason)).status, 403, 'Dr D is not registered with --break-glass');
    assert.equal((await call(er, 'GET', `Observation/${id.obsB1}`)).status, 404);
    const granted = await call(er, 'POST', `Patient/${id.B}/$break-glass`, reason);
    assert.equal(granted.status, 201, granted.text);
    assert.equal((await call(er, 'GET', `Observation/${id.obsB1}`)).status, 200);
    assert.deepEqual(await searchIds(er, `Observation?subject=Patient/${id.B}`), [`Observation/${id.obsB1}`]);
    assert.equal((await call(er, 'GET', `Observation/${id.obsA1}`)).status, 404, 'only the patient it was granted for');
    assert.equal((await call(er, 'POST', 'Observation', obs(id.B!, '8867-4', '2024-08-01'))).status, 403, 'read access only');
    const patientB = await patientToken(server, { patientId: id.B!, scope: 'patient/*.rs' });
    const record = await call(patientB, 'GET', `Patient/${id.B}/$break-glass`);
    assert.equal(record.status, 200, record.text);
    const text = JSON.stringify(record.body);
    assert.match(text, /unconscious in the emergency room/);
    assert.ok(text.includes(`Practitioner/${id.E}`));
    assert.ok(text.includes(`Observation/${id.obsB1}`), 'what was read is recorded');
    assert.ok(!text.includes(`Observation/${id.obsA1}`));
    // The time box runs out: the next request is denied again.
    server.app.auth.db.prepare('UPDATE break_glass_grant SET expires_at = ?').run(Date.now() - 1);
    assert.equal((await call(er, 'GET', `Observation/${id.obsB1}`)).status, 404);
  });

  it('a change takes effect on the next request', async () => {
    assert.equal((await call(tok.D!, 'GET', `Observation/${id.obsA1}`)).status, 200);
    const ca1: Consent = (await call(server.token, 'GET', `Consent/${id.CA1}`)).body;
    await admin('PUT', `Consent/${id.CA1}`, { ...ca1, status: 'inactive' });
    assert.equal((await call(tok.D!, 'GET', `Observation/${id.obsA1}`)).status, 404);
    await admin('PUT', `Consent/${id.CA1}`, { ...ca1, status: 'active' });
    assert.equal((await call(tok.D!, 'GET', `Observation/${id.obsA1}`)).status, 200);
    // A role ending changes what Dr F acts for.
    const role = (await call(server.token, 'GET', `PractitionerRole/${id.R}`)).body;
    const before = await searchIds(tok.F!, 'Observation');
    assert.ok(before.length >= 2);
    await admin('PUT', `PractitionerRole/${id.R}`, { ...role, active: false });
    assert.deepEqual(await searchIds(tok.F!, 'Observation'), []);
    await admin('PUT', `PractitionerRole/${id.R}`, { ...role, active: true });
    assert.deepEqual(await searchIds(tok.F!, 'Observation'), before);
  });
});

describe('CONSENT_BASE=permit: patients opt out', () => {
  let server: Server;
  const id: Record<string, string> = {};
  const call = async (token: string, path: string) => (await fetch(`${server.base}/${path}`, { headers: { authorization: `Bearer ${token}` } })).status;

  before(async () => {
    server = await testServer({ CONSENT_BASE: 'permit' });
    const post = async (type: string, body: unknown) => {
      const r = await fetch(`${server.base}/${type}`, { method: 'POST', headers: { authorization: `Bearer ${server.token}`, 'content-type': FHIR_JSON }, body: JSON.stringify(body) });
      assert.equal(r.status, 201);
      return ((await r.json()) as { id: string }).id;
    };
    id.P = await post('Patient', { resourceType: 'Patient' });
    id.Q = await post('Patient', { resourceType: 'Patient' });
    id.doc = await post('Practitioner', { resourceType: 'Practitioner' });
    id.other = await post('Practitioner', { resourceType: 'Practitioner' });
    await post('Consent', {
      resourceType: 'Consent', status: 'active', scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
      category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }], patient: { reference: `Patient/${id.Q}` }, policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTOUT' }] },
      provision: { type: 'deny', actor: [{ role: { coding: [{ code: 'IRCP' }] }, reference: { reference: `Practitioner/${id.other}` } }] },
    });
  });
  after(async () => { await server?.close(); });

  it('everyone sees a patient without Consent; an opt-out denies the named actor only', async () => {
    const token = async (practitioner: string) => {
      const registry = server.app.auth.registry;
      const creds = newCredentials('dr');
      await registry.addUser({ ...creds, fhirUser: `Practitioner/${practitioner}` });
      const { client } = registry.addClient({ type: 'public', redirectUris: [UNUSED_REDIRECT_URI], scope: 'user/*.rs' });
      return (await codeFlow(server, { clientId: client.clientId, redirectUri: UNUSED_REDIRECT_URI, scope: 'user/*.rs', ...creds })).token.body.access_token as string;
    };
    const doc = await token(id.doc!);
    const other = await token(id.other!);
    assert.equal(await call(doc, `Patient/${id.P}`), 200);
    assert.equal(await call(doc, `Patient/${id.Q}`), 200);
    assert.equal(await call(other, `Patient/${id.P}`), 200);
    assert.equal(await call(other, `Patient/${id.Q}`), 404);
  });
});
