import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import type { Bundle, Observation } from '@medplum/fhirtypes';
import { FHIR_JSON, systemToken, testApp } from './helpers.js';

type TestApp = Awaited<ReturnType<typeof testApp>>;

const vital = (patient: string, value: number): Observation => ({
  resourceType: 'Observation', status: 'final', subject: { reference: `Patient/${patient}` },
  category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-signs' }] }],
  code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] }, valueQuantity: { value, unit: '/min' },
});
const lab = (patient: string): Observation => ({
  resourceType: 'Observation', status: 'final', subject: { reference: `Patient/${patient}` },
  category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'laboratory' }] }],
  code: { coding: [{ system: 'http://loinc.org', code: '2345-7' }] }, valueQuantity: { value: 5.4, unit: 'mmol/L' },
});

/** Scope checks per interaction with real tokens from the token endpoint (system/ scopes). */
describe('SMART scope enforcement', () => {
  let t: TestApp;
  const ids: Record<string, string> = {};
  const as = (token: string) => ({
    get: (path: string) => request(t.raw).get(`/fhir/${path}`).set('authorization', `Bearer ${token}`),
    post: (path: string, body: unknown, headers: Record<string, string> = {}) => request(t.raw).post(`/fhir/${path}`).set('authorization', `Bearer ${token}`).set('content-type', FHIR_JSON).set(headers).send(JSON.stringify(body)),
    put: (path: string, body: unknown) => request(t.raw).put(`/fhir/${path}`).set('authorization', `Bearer ${token}`).set('content-type', FHIR_JSON).send(JSON.stringify(body)),
    del: (path: string) => request(t.raw).delete(`/fhir/${path}`).set('authorization', `Bearer ${token}`),
  });

  before(async () => {
    t = await testApp();
    const admin = as(t.token!);
    ids.patient = (await admin.post('Patient', { resourceType: 'Patient', gender: 'female' })).body.id;
    ids.vital = (await admin.post('Observation', vital(ids.patient, 72))).body.id;
    ids.lab = (await admin.post('Observation', lab(ids.patient))).body.id;
  });
  after(async () => t.close());

  it('refuses interactions the scopes do not name, with a 403 OperationOutcome', async () => {
    const readOnly = as(await systemToken(t, 'system/Observation.rs'));
    assert.equal((await readOnly.get(`Observation/${ids.vital}`)).status, 200);
    assert.equal((await readOnly.get('Observation?code=8867-4')).status, 200);
    const create = await readOnly.post('Observation', vital(ids.patient, 80));
    assert.equal(create.status, 403);
    assert.equal(create.body.resourceType, 'OperationOutcome');
    assert.equal(create.body.issue[0].code, 'forbidden');
    assert.equal((await readOnly.get(`Patient/${ids.patient}`)).status, 403, 'no Patient scope');
    assert.equal((await readOnly.del(`Observation/${ids.vital}`)).status, 403);
    // v2 letters are exact: r without s may read but not search.
    const readNoSearch = as(await systemToken(t, 'system/Observation.r'));
    assert.equal((await readNoSearch.get(`Observation/${ids.vital}`)).status, 200);
    assert.equal((await readNoSearch.get('Observation')).status, 403);
    // v1 write = c u d, no read.
    const writer = as(await systemToken(t, 'system/Observation.write'));
    assert.equal((await writer.post('Observation', vital(ids.patient, 81))).status, 201);
    assert.equal((await writer.get(`Observation/${ids.vital}`)).status, 403);
  });

  it('checks every Bundle entry against the scopes', async () => {
    const obsOnly = as(await systemToken(t, 'system/Observation.cruds'));
    const bundle = { resourceType: 'Bundle', type: 'batch', entry: [
      { resource: vital(ids.patient, 90), request: { method: 'POST', url: 'Observation' } },
      { resource: { resourceType: 'Patient', gender: 'male' }, request: { method: 'POST', url: 'Patient' } },
    ] };
    const res = await obsOnly.post('', bundle);
    assert.equal(res.status, 200);
    const out = res.body as Bundle;
    assert.match(out.entry![0]!.response!.status, /^201/);
    assert.match(out.entry![1]!.response!.status, /^403/);
    const txn = await obsOnly.post('', { ...bundle, type: 'transaction' });
    assert.equal(txn.status, 403, 'a transaction with a forbidden entry fails whole');
  });

  it('drops included resources of types the token cannot read', async () => {
    const obsOnly = as(await systemToken(t, 'system/Observation.rs'));
    const res = await obsOnly.get(`Observation?_id=${ids.vital}&_include=Observation:subject`);
    assert.equal(res.status, 200);
    const types = (res.body as Bundle).entry!.map((e) => e.resource!.resourceType);
    assert.deepEqual(types, ['Observation'], 'the Patient is not readable with this token');
    const both = as(await systemToken(t, 'system/Observation.rs system/Patient.rs'));
    const res2 = await both.get(`Observation?_id=${ids.vital}&_include=Observation:subject`);
    assert.deepEqual((res2.body as Bundle).entry!.map((e) => e.resource!.resourceType).sort(), ['Observation', 'Patient']);
  });

  it('applies granular scopes (queries) to searches, reads, includes and writes', async () => {
    const vitalsOnly = as(await systemToken(t, 'system/Observation.cruds?category=vital-signs system/Patient.rs'));
    const search = await vitalsOnly.get(`Observation?subject=Patient/${ids.patient}&_total=accurate`);
    assert.equal(search.status, 200);
    const found = (search.body as Bundle).entry!.map((e) => e.resource!.id);
    assert.ok(found.includes(ids.vital));
    assert.ok(!found.includes(ids.lab), 'the laboratory Observation is outside the scope');
    assert.equal((search.body as Bundle).total, found.length, '_total counts only what the scope allows');
    assert.equal((await vitalsOnly.get(`Observation/${ids.vital}`)).status, 200);
    assert.equal((await vitalsOnly.get(`Observation/${ids.lab}`)).status, 403);
    // Revinclude from the Patient shows only the vital sign.
    const rev = await vitalsOnly.get(`Patient?_id=${ids.patient}&_revinclude=Observation:subject`);
    const revIds = (rev.body as Bundle).entry!.map((e) => e.resource!.id);
    assert.ok(revIds.includes(ids.vital) && !revIds.includes(ids.lab), JSON.stringify(revIds));
    // Writes: a vital sign may be created; a lab result may not, and leaves nothing behind.
    assert.equal((await vitalsOnly.post('Observation', vital(ids.patient, 66))).status, 201);
    const before = (await as(t.token!).get('Observation?_summary=count&category=laboratory')).body.total;
    const refused = await vitalsOnly.post('Observation', lab(ids.patient));
    assert.equal(refused.status, 403);
    assert.equal((await as(t.token!).get('Observation?_summary=count&category=laboratory')).body.total, before);
    // Updating the vital sign into a lab result is refused too, and the stored version is unchanged.
    const cur = (await vitalsOnly.get(`Observation/${ids.vital}`)).body as Observation;
    assert.equal((await vitalsOnly.put(`Observation/${ids.vital}`, { ...lab(ids.patient), id: ids.vital })).status, 403);
    assert.equal(((await vitalsOnly.get(`Observation/${ids.vital}`)).body as Observation).meta!.versionId, cur.meta!.versionId);
    // Deleting the lab result is outside the scope.
    assert.equal((await vitalsOnly.del(`Observation/${ids.lab}`)).status, 403);
  });

  it('combines several granular scopes on one parameter, refuses combinations it cannot express', async () => {
    const two = as(await systemToken(t, 'system/Observation.rs?category=vital-signs system/Observation.rs?category=laboratory'));
    const res = await two.get(`Observation?subject=Patient/${ids.patient}`);
    assert.equal(res.status, 200);
    const found = (res.body as Bundle).entry!.map((e) => e.resource!.id);
    assert.ok(found.includes(ids.vital) && found.includes(ids.lab));
    const mixed = as(await systemToken(t, 'system/Observation.rs?category=vital-signs system/Observation.rs?code=2345-7'));
    const refused = await mixed.get('Observation');
    assert.equal(refused.status, 403);
    assert.match(refused.body.issue[0].diagnostics, /different parameters/);
  });
});
