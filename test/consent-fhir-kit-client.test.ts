// Consent seen through a third-party client (fhir-kit-client): a practitioner's app gets only what
// the patients' Consents permit, and the patient's app asks why.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Bundle, Parameters } from '@medplum/fhirtypes';
import { Client } from 'fhir-kit-client';
import { testServer } from './helpers.js';
import { codeFlow, newCredentials, patientToken, UNUSED_REDIRECT_URI } from './smart-helpers.js';

describe('fhir-kit-client under patient consent', () => {
  let server: Awaited<ReturnType<typeof testServer>>;
  let ehr: Client;
  const id: Record<string, string> = {};

  before(async () => {
    server = await testServer();
    ehr = new Client({ baseUrl: server.base, bearerToken: server.token });
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const create = async (resource: any) => ((await ehr.create({ resourceType: resource.resourceType as string, body: resource })) as unknown as { id: string }).id;
    id.anna = await create({ resourceType: 'Patient', name: [{ family: 'Anna' }] });
    id.ben = await create({ resourceType: 'Patient', name: [{ family: 'Ben' }] });
    id.dr = await create({ resourceType: 'Practitioner', name: [{ family: 'Who' }] });
    for (const p of [id.anna, id.ben]) {
      await create({ resourceType: 'Observation', status: 'final', subject: { reference: `Patient/${p}` }, code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] }, effectiveDateTime: '2024-01-02' });
    }
    await create({
      resourceType: 'Consent', status: 'active',
      scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
      category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }], patient: { reference: `Patient/${id.anna}` },
      policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTIN' }] },
      provision: { type: 'permit', actor: [{ role: { coding: [{ code: 'IRCP' }] }, reference: { reference: `Practitioner/${id.dr}` } }] },
    });
  });
  after(async () => { await server?.close(); });

  it('the CapabilityStatement lists the consent operations on the types they apply to', async () => {
    const cs = (await ehr.capabilityStatement()) as unknown as { rest: Array<{ resource: Array<{ type: string; operation?: Array<{ name: string }> }> }> };
    const ops = (type: string) => cs.rest[0]!.resource.find((r) => r.type === type)!.operation!.map((o) => o.name);
    for (const name of ['explain-access', 'break-glass', 'consent-key']) assert.ok(ops('Patient').includes(name), name);
    for (const name of ['consent-typed-data', 'consent-sign', 'consent-status']) assert.ok(ops('Consent').includes(name), name);
    assert.ok(!ops('Observation').includes('explain-access'));
  });

  it('a practitioner sees the consenting patient\'s data only; the patient can ask why', async () => {
    const creds = newCredentials('dr');
    await server.app.auth.registry.addUser({ ...creds, fhirUser: `Practitioner/${id.dr}` });
    const { client } = server.app.auth.registry.addClient({ type: 'public', redirectUris: [UNUSED_REDIRECT_URI], scope: 'user/*.rs' });
    const token = (await codeFlow(server, { clientId: client.clientId, redirectUri: UNUSED_REDIRECT_URI, scope: 'user/*.rs', ...creds })).token.body.access_token as string;
    const dr = new Client({ baseUrl: server.base, bearerToken: token });
    const found = (await dr.search({ resourceType: 'Observation', searchParams: { code: '8867-4', _total: 'accurate' } })) as unknown as Bundle;
    assert.equal(found.total, 1);
    assert.equal((found.entry![0]!.resource as { subject: { reference: string } }).subject.reference, `Patient/${id.anna}`);
    await assert.rejects(dr.read({ resourceType: 'Patient', id: id.ben! }), (err: { response?: { status: number } }) => err.response?.status === 404);
    assert.equal(((await dr.read({ resourceType: 'Patient', id: id.anna! })) as unknown as { id: string }).id, id.anna);

    const anna = new Client({ baseUrl: server.base, bearerToken: await patientToken(server, { patientId: id.anna!, scope: 'patient/*.rs' }) });
    const why = (await anna.operation({ name: 'explain-access', resourceType: 'Patient', id: id.anna, method: 'GET', input: { actor: `Practitioner/${id.dr}`, resource: 'Observation' } })) as unknown as Parameters;
    assert.equal(why.parameter!.find((p) => p.name === 'decision')!.valueCode, 'permit');
  });

  it('the access rules hold through the client: several patients need every one\'s say, old versions are judged on their own, identity resources are not the practitioner\'s to write', async () => {
    const creds = newCredentials('dr2');
    await server.app.auth.registry.addUser({ ...creds, fhirUser: `Practitioner/${id.dr}` });
    const { client } = server.app.auth.registry.addClient({ type: 'public', redirectUris: [UNUSED_REDIRECT_URI], scope: 'user/*.cruds' });
    const dr = new Client({ baseUrl: server.base, bearerToken: (await codeFlow(server, { clientId: client.clientId, redirectUri: UNUSED_REDIRECT_URI, scope: 'user/*.cruds', ...creds })).token.body.access_token as string });
    const status = (err: { response?: { status: number } }) => err.response?.status;
    // A Condition of Ben's (who has no Consent) asserted by Anna (who permits the practitioner): hidden.
    const shared = (await ehr.create({ resourceType: 'Condition', body: { resourceType: 'Condition', subject: { reference: `Patient/${id.ben}` }, asserter: { reference: `Patient/${id.anna}` }, code: { text: 'shared' } } })) as unknown as { id: string };
    await assert.rejects(dr.read({ resourceType: 'Condition', id: shared.id }), (err: { response?: { status: number } }) => status(err) === 404);
    const listed = (await dr.search({ resourceType: 'Condition', searchParams: { _id: shared.id, _total: 'accurate' } })) as unknown as Bundle;
    assert.equal(listed.total, 0);
    // An Observation first filed under Ben, then moved to Anna: the practitioner sees version 2 only.
    const moved = (await ehr.create({ resourceType: 'Observation', body: { resourceType: 'Observation', status: 'final', subject: { reference: `Patient/${id.ben}` }, code: { text: 'moved' }, note: [{ text: 'ben-only' }] } })) as unknown as { id: string };
    await ehr.update({ resourceType: 'Observation', id: moved.id, body: { resourceType: 'Observation', id: moved.id, status: 'final', subject: { reference: `Patient/${id.anna}` }, code: { text: 'moved' } } });
    assert.equal(((await dr.vread({ resourceType: 'Observation', id: moved.id, version: '2' })) as unknown as { meta: { versionId: string } }).meta.versionId, '2');
    await assert.rejects(dr.vread({ resourceType: 'Observation', id: moved.id, version: '1' }), (err: { response?: { status: number } }) => status(err) === 404);
    const history = (await dr.history({ resourceType: 'Observation', id: moved.id })) as unknown as Bundle;
    assert.deepEqual(history.entry!.map((e) => e.resource!.meta!.versionId), ['2']);
    assert.ok(!JSON.stringify(history).includes('ben-only'));
    // A role naming an Organization would make the practitioner that Organization: refused.
    await assert.rejects(
      dr.create({ resourceType: 'PractitionerRole', body: { resourceType: 'PractitionerRole', practitioner: { reference: `Practitioner/${id.dr}` }, organization: { reference: 'Organization/any' } } }),
      (err: { response?: { status: number } }) => status(err) === 403,
    );
  });
});
