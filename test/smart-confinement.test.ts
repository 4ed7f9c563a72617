import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Bundle, Observation } from '@medplum/fhirtypes';
import { FHIR_JSON, testServer } from './helpers.js';
import { codeFlow, newCredentials, patientToken, UNUSED_REDIRECT_URI } from './smart-helpers.js';

type Server = Awaited<ReturnType<typeof testServer>>;
const SYS = 'urn:custos:test:confinement';

/**
 * A patient/ token must not read, count or guess another patient's data: through reads, searches,
 * _include/_revinclude, chains, _total, history, compartment searches, conditional operations,
 * writes and error messages.
 */
describe('patient-limited tokens stay in their patient\'s compartment', () => {
  let server: Server;
  const id: Record<string, string> = {};
  let tokenA: string;

  const call = async (token: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}) => {
    const res = await fetch(`${server.base}/${path}`, {
      method, headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': FHIR_JSON } : {}), ...headers }, body: body ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    return { status: res.status, text, body: text ? JSON.parse(text) : undefined };
  };
  const admin = (method: string, path: string, body?: unknown) => call(server.token, method, path, body);
  const obs = (patient: string, value: number, extra: Partial<Observation> = {}): Observation => ({
    resourceType: 'Observation', status: 'final', subject: { reference: `Patient/${patient}` },
    code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] }, valueQuantity: { value, unit: '/min' }, ...extra,
  });
  const ids = (b: Bundle) => (b.entry ?? []).map((e) => `${e.resource!.resourceType}/${e.resource!.id}`);

  before(async () => {
    // Consent is not what these tests are about: with base permit, only SMART confines.
    server = await testServer({ CONSENT_BASE: 'permit' });
    id.A = (await admin('POST', 'Patient', { resourceType: 'Patient', gender: 'female', name: [{ family: 'Alpha' }] })).body.id;
    id.B = (await admin('POST', 'Patient', { resourceType: 'Patient', gender: 'male', name: [{ family: 'Bravoname' }] })).body.id;
    id.pr = (await admin('POST', 'Practitioner', { resourceType: 'Practitioner', name: [{ family: 'Shared' }] })).body.id;
    const performer = [{ reference: `Practitioner/${id.pr}` }];
    id.oA = (await admin('POST', 'Observation', obs(id.A, 61, { performer, identifier: [{ system: SYS, value: 'obs-a' }] }))).body.id;
    id.oB = (await admin('POST', 'Observation', obs(id.B, 99, { performer, identifier: [{ system: SYS, value: 'obs-b' }] }))).body.id;
    id.eB = (await admin('POST', 'Encounter', { resourceType: 'Encounter', status: 'finished', class: { code: 'AMB' }, subject: { reference: `Patient/${id.B}` } })).body.id;
    tokenA = await patientToken(server, { patientId: id.A, scope: 'patient/*.cruds' });
  });
  after(async () => server.close());

  it('reads: another patient\'s resources answer exactly like ones that do not exist', async () => {
    assert.equal((await call(tokenA, 'GET', `Patient/${id.A}`)).status, 200);
    assert.equal((await call(tokenA, 'GET', `Observation/${id.oA}`)).status, 200);
    for (const [type, other] of [['Patient', id.B], ['Observation', id.oB], ['Encounter', id.eB]] as const) {
      const foreign = await call(tokenA, 'GET', `${type}/${other}`);
      const missing = await call(tokenA, 'GET', `${type}/does-not-exist`);
      assert.equal(foreign.status, 404, `${type}/${other}`);
      assert.equal(missing.status, 404);
      assert.equal(foreign.body.issue[0].diagnostics.replace(other, 'X'), missing.body.issue[0].diagnostics.replace('does-not-exist', 'X'), 'same message');
      assert.ok(!foreign.text.includes('Bravoname'));
      assert.equal((await call(tokenA, 'GET', `${type}/${other}/_history/1`)).status, 404, 'vread');
      assert.equal((await call(tokenA, 'GET', `${type}/${other}/_history`)).status, 404, 'instance history');
    }
    assert.equal((await call(tokenA, 'GET', `Practitioner/${id.pr}`)).status, 200, 'shared resources stay readable');
  });

  it('searches, _total and _summary=count see only the patient\'s compartment', async () => {
    const all = await call(tokenA, 'GET', 'Observation?_total=accurate');
    assert.equal(all.status, 200);
    assert.deepEqual(ids(all.body), [`Observation/${id.oA}`]);
    assert.equal(all.body.total, 1);
    const byOther = await call(tokenA, 'GET', `Observation?subject=Patient/${id.B}&_total=accurate`);
    assert.equal(byOther.body.total, 0);
    assert.equal((await call(tokenA, 'GET', 'Observation?_summary=count')).body.total, 1);
    assert.deepEqual(ids((await call(tokenA, 'GET', 'Patient')).body), [`Patient/${id.A}`]);
    assert.deepEqual(ids((await call(tokenA, 'GET', `Patient?_id=${id.B}`)).body), []);
    assert.equal((await call(tokenA, 'GET', 'Encounter?_summary=count')).body.total, 0);
    assert.equal((await call(tokenA, 'GET', `Patient/${id.B}/Observation`)).status, 404, 'another patient\'s compartment');
    assert.deepEqual(ids((await call(tokenA, 'GET', `Patient/${id.A}/Observation`)).body), [`Observation/${id.oA}`]);
  });

  it('_include, _revinclude and chains do not reach another patient', async () => {
    const inc = await call(tokenA, 'GET', 'Observation?_include=Observation:subject&_include=Observation:performer');
    assert.deepEqual(ids(inc.body).sort(), [`Observation/${id.oA}`, `Patient/${id.A}`, `Practitioner/${id.pr}`].sort());
    // The shared Practitioner performed both patients' Observations: only A's comes back.
    const rev = await call(tokenA, 'GET', `Practitioner?_id=${id.pr}&_revinclude=Observation:performer`);
    assert.deepEqual(ids(rev.body).sort(), [`Observation/${id.oA}`, `Practitioner/${id.pr}`].sort());
    const iter = await call(tokenA, 'GET', `Practitioner?_id=${id.pr}&_revinclude=Observation:performer&_include:iterate=Observation:subject`);
    assert.ok(!ids(iter.body).includes(`Patient/${id.B}`), JSON.stringify(ids(iter.body)));
    // B is male: a chain on gender finds nothing rather than B's Observations.
    const chained = await call(tokenA, 'GET', 'Observation?subject:Patient.gender=male&_total=accurate');
    assert.equal(chained.status, 200);
    assert.equal(chained.body.total, 0);
    const own = await call(tokenA, 'GET', 'Observation?subject:Patient.gender=female');
    assert.deepEqual(ids(own.body), [`Observation/${id.oA}`]);
  });

  it('type and system history are refused; instance history of own data works', async () => {
    assert.equal((await call(tokenA, 'GET', 'Observation/_history')).status, 403);
    assert.equal((await call(tokenA, 'GET', '_history')).status, 403);
    const h = await call(tokenA, 'GET', `Observation/${id.oA}/_history`);
    assert.equal(h.status, 200);
    assert.equal(h.body.total, 1);
  });

  it('writes: only into the patient\'s own compartment; another patient\'s resources cannot be changed or deleted', async () => {
    assert.equal((await call(tokenA, 'POST', 'Observation', obs(id.B, 70))).status, 403);
    assert.equal((await call(tokenA, 'POST', 'Patient', { resourceType: 'Patient', gender: 'other' })).status, 403);
    const mine = await call(tokenA, 'POST', 'Observation', obs(id.A, 71));
    assert.equal(mine.status, 201);
    assert.equal((await call(tokenA, 'PUT', `Observation/${id.oB}`, { ...obs(id.A, 72), id: id.oB })).status, 404);
    assert.equal((await call(tokenA, 'PUT', `Observation/${mine.body.id}`, { ...obs(id.B, 72), id: mine.body.id })).status, 403, 'moving own data to another patient');
    assert.equal((await call(tokenA, 'PATCH', `Observation/${id.oB}`, [{ op: 'replace', path: '/status', value: 'amended' }], { 'content-type': 'application/json-patch+json' })).status, 404);
    assert.equal((await call(tokenA, 'PATCH', `Observation/${mine.body.id}`, [{ op: 'replace', path: '/subject/reference', value: `Patient/${id.B}` }], { 'content-type': 'application/json-patch+json' })).status, 403);
    assert.equal((await call(tokenA, 'DELETE', `Observation/${id.oB}`)).status, 404);
    assert.equal((await call(tokenA, 'PUT', `Patient/${id.A}`, { resourceType: 'Patient', id: id.A, gender: 'female', name: [{ family: 'Alpha' }] })).status, 200);
    const b = await admin('GET', `Observation/${id.oB}`);
    assert.equal(b.status, 200);
    assert.equal(b.body.meta.versionId, '1', 'B\'s Observation is untouched');
  });

  it('conditional operations match only inside the compartment', async () => {
    // Criteria that match B's Observation for an unconfined client match nothing here: a new
    // Observation is created for A, B's stays as it was.
    const upd = await call(tokenA, 'PUT', `Observation?identifier=${SYS}|obs-b`, obs(id.A, 73, { identifier: [{ system: SYS, value: 'obs-b' }] }));
    assert.equal(upd.status, 201);
    assert.notEqual(upd.body.id, id.oB);
    assert.equal((await admin('GET', `Observation/${id.oB}`)).body.meta.versionId, '1');
    const cond = await call(tokenA, 'POST', 'Observation', obs(id.A, 74), { 'if-none-exist': `identifier=${SYS}|obs-b` });
    assert.equal(cond.status, 200, 'If-None-Exist finds the one in A\'s compartment, not B\'s');
    assert.equal(cond.body.id, upd.body.id);
    const del = await call(tokenA, 'DELETE', `Encounter?subject=Patient/${id.B}`);
    assert.equal(del.status, 204);
    assert.equal((await admin('GET', `Encounter/${id.eB}`)).status, 200, 'B\'s Encounter is not deleted');
  });

  it('Bundle entries are confined one by one', async () => {
    const batch = await call(tokenA, 'POST', '', { resourceType: 'Bundle', type: 'batch', entry: [
      { request: { method: 'GET', url: `Observation/${id.oB}` } },
      { request: { method: 'GET', url: `Observation/${id.oA}` } },
      { request: { method: 'GET', url: 'Observation?_total=accurate' } },
    ] });
    assert.equal(batch.status, 200);
    const e = (batch.body as Bundle).entry!;
    assert.match(e[0]!.response!.status, /^404/);
    assert.match(e[1]!.response!.status, /^200/);
    assert.ok(!ids(e[2]!.resource as Bundle).includes(`Observation/${id.oB}`));
    const txn = await call(tokenA, 'POST', '', { resourceType: 'Bundle', type: 'transaction', entry: [
      { resource: obs(id.A, 75), request: { method: 'POST', url: 'Observation' } },
      { resource: obs(id.B, 76), request: { method: 'POST', url: 'Observation' } },
    ] });
    assert.equal(txn.status, 403, 'the whole transaction fails');
  });

  it('a practitioner\'s patient/ token is confined to the patient picked at launch; user/ scopes are not', async () => {
    const registry = server.app.auth.registry;
    const creds = newCredentials('dr');
    await registry.addUser({ ...creds, fhirUser: `Practitioner/${id.pr}` });
    const scope = 'launch/patient patient/*.rs user/Practitioner.rs';
    const { client } = registry.addClient({ type: 'public', redirectUris: [UNUSED_REDIRECT_URI], scope });
    const flow = await codeFlow(server, { clientId: client.clientId, redirectUri: UNUSED_REDIRECT_URI, scope, ...creds, patient: id.A });
    assert.equal(flow.token.status, 200, JSON.stringify(flow.token.body));
    assert.equal(flow.token.body.patient, id.A);
    const t = flow.token.body.access_token as string;
    assert.equal((await call(t, 'GET', `Observation/${id.oA}`)).status, 200);
    assert.equal((await call(t, 'GET', `Observation/${id.oB}`)).status, 404);
    const seenByLaunch = (await call(t, 'GET', 'Observation?_count=100')).body as Bundle;
    assert.ok(ids(seenByLaunch).includes(`Observation/${id.oA}`) && !ids(seenByLaunch).includes(`Observation/${id.oB}`));
    assert.ok(seenByLaunch.entry!.every((e) => (e.resource as Observation).subject!.reference === `Patient/${id.A}`));
    assert.equal((await call(t, 'GET', `Practitioner/${id.pr}`)).status, 200);
    // The same practitioner with user/ scopes (no consent yet: the scopes are the bound) sees both.
    const uScope = 'user/Observation.rs';
    const u = registry.addClient({ type: 'public', redirectUris: [UNUSED_REDIRECT_URI], scope: uScope });
    const uFlow = await codeFlow(server, { clientId: u.client.clientId, redirectUri: UNUSED_REDIRECT_URI, scope: uScope, ...creds });
    const ut = uFlow.token.body.access_token as string;
    const seen = ids((await call(ut, 'GET', 'Observation?code=8867-4&_count=100')).body);
    assert.ok(seen.includes(`Observation/${id.oA}`) && seen.includes(`Observation/${id.oB}`));
  });

  it('a patient user is confined even with user/ scopes', async () => {
    const t = await patientToken(server, { patientId: id.A, scope: 'user/Observation.rs' });
    assert.equal((await call(t, 'GET', `Observation/${id.oB}`)).status, 404);
    assert.ok(!ids((await call(t, 'GET', 'Observation')).body).includes(`Observation/${id.oB}`));
  });

  it('instance history pages hold only the versions that were the patient\'s, however they interleave with another\'s', async () => {
    // 30 versions alternating between A and B: A's token sees the 15 that were A's, page by page.
    const first = await admin('POST', 'Observation', obs(id.A, 0));
    const oid = first.body.id as string;
    for (let i = 1; i < 30; i++) {
      const r = await admin('PUT', `Observation/${oid}`, { ...obs(i % 2 === 0 ? id.A : id.B, i, { note: [{ text: `v${i + 1}-${i % 2 === 0 ? 'a' : 'bravo-only'}` }] }), id: oid });
      assert.equal(r.status, 200, r.text);
    }
    // The current version (30) is B's: A cannot see the resource at all.
    assert.equal((await call(tokenA, 'GET', `Observation/${oid}/_history`)).status, 404);
    await admin('PUT', `Observation/${oid}`, { ...obs(id.A, 31), id: oid });
    const seen: string[] = [];
    let url: string | undefined = `${server.base}/Observation/${oid}/_history?_count=4`;
    let pages = 0;
    let lastTotal: number | undefined;
    while (url && pages < 20) {
      const page = await call(tokenA, 'GET', url.slice(server.base.length + 1));
      assert.equal(page.status, 200, page.text);
      assert.ok(!page.text.includes('bravo-only'), 'no version of B\'s in any page');
      assert.ok((page.body.entry ?? []).length <= 4);
      seen.push(...(page.body.entry ?? []).map((e: { resource: Observation }) => e.resource.meta!.versionId!));
      lastTotal = page.body.total;
      url = page.body.link.find((l: { relation: string }) => l.relation === 'next')?.url;
      pages++;
    }
    const expected = Array.from({ length: 31 }, (_, i) => i + 1).filter((v) => v % 2 === 1).map(String).reverse();
    assert.deepEqual(seen, expected, 'every version of A\'s, newest first, each once');
    assert.equal(lastTotal, expected.length, 'the last page knows the total of visible versions');
  });
});
