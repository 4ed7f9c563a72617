import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Client } from 'fhir-kit-client';
import { readFixture, testServer, WITH_FIXTURES } from './helpers.js';

/** A real third-party FHIR client against a listening server. */
describe('fhir-kit-client', () => {
  let server: Awaited<ReturnType<typeof testServer>>;
  let client: InstanceType<typeof Client>;

  before(async () => {
    server = await testServer();
    client = new Client({ baseUrl: server.base, bearerToken: server.token });
  });
  after(async () => server.close());

  it('reads the CapabilityStatement', async () => {
    const cs = (await client.capabilityStatement()) as { resourceType: string; fhirVersion: string };
    assert.equal(cs.resourceType, 'CapabilityStatement');
    assert.equal(cs.fhirVersion, '4.0.1');
  });

  it('does CRUD and history', async () => {
    const created = (await client.create({ resourceType: 'Patient', body: { resourceType: 'Patient', name: [{ family: 'Kit', given: ['Fhir'] }] } })) as any;
    assert.ok(created.id);
    const read = (await client.read({ resourceType: 'Patient', id: created.id })) as any;
    assert.equal(read.name[0].family, 'Kit');
    const updated = (await client.update({ resourceType: 'Patient', id: created.id, body: { ...read, gender: 'female' } })) as any;
    assert.equal(updated.meta.versionId, '2');
    const v1 = (await client.vread({ resourceType: 'Patient', id: created.id, version: '1' })) as any;
    assert.equal(v1.gender, undefined);
    const patched = (await client.patch({ resourceType: 'Patient', id: created.id, jsonPatch: [{ op: 'add', path: '/active', value: true }] })) as any;
    assert.equal(patched.active, true);
    const history = (await client.history({ resourceType: 'Patient', id: created.id })) as any;
    assert.equal(history.total, 3);
    await client.delete({ resourceType: 'Patient', id: created.id });
    await assert.rejects(client.read({ resourceType: 'Patient', id: created.id }), (e: any) => e.response?.status === 410);
  });

  it('runs a transaction and searches it with paging', WITH_FIXTURES, async () => {
    const bundle = readFixture('synthea/inferno-us-core/uscore_bundle_patient_907.json');
    const resp = (await client.transaction({ body: bundle })) as any;
    assert.equal(resp.type, 'transaction-response');
    assert.ok(resp.entry.every((e: any) => /^20[01]/.test(e.response.status)));
    const enc = (await client.search({ resourceType: 'Encounter', searchParams: { patient: 'Patient/907' } })) as any;
    assert.equal(enc.entry.length, 1);
    assert.equal(enc.entry[0].resource.subject.reference, 'Patient/907');

    for (let i = 0; i < 5; i++) {
      await client.create({ resourceType: 'Observation', body: { resourceType: 'Observation', status: 'final', code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] }, subject: { reference: 'Patient/907' }, valueQuantity: { value: 60 + i, unit: '/min' } } });
    }
    let page = (await client.search({ resourceType: 'Observation', searchParams: { subject: 'Patient/907', code: 'http://loinc.org|8867-4', _count: 2, _sort: 'value-quantity' } })) as any;
    const values: number[] = [];
    for (;;) {
      values.push(...page.entry.map((e: any) => e.resource.valueQuantity.value));
      const next = client.nextPage({ bundle: page });
      if (!next) break;
      page = await next;
    }
    assert.deepEqual(values, [60, 61, 62, 63, 64]);
    const compartment = (await client.compartmentSearch({ resourceType: 'Observation', compartment: { resourceType: 'Patient', id: '907' }, searchParams: { _summary: 'count' } })) as any;
    assert.equal(compartment.total, 5);
  });
});
