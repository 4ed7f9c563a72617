// The audit trail seen through a third-party client (fhir-kit-client): a patient's app lists who
// read their data and shows the access report; the trail cannot be written through the API.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { AuditEvent, Bundle, Parameters } from '@medplum/fhirtypes';
import { Client } from 'fhir-kit-client';
import { testServer } from './helpers.js';
import { codeFlow, newCredentials, patientToken, UNUSED_REDIRECT_URI } from './smart-helpers.js';

describe('fhir-kit-client and the audit trail', () => {
  let server: Awaited<ReturnType<typeof testServer>>;
  let ehr: Client;
  const id: Record<string, string> = {};

  before(async () => {
    server = await testServer({ AUDIT_FLUSH_MS: '20', CONSENT_BASE: 'permit' });
    ehr = new Client({ baseUrl: server.base, bearerToken: server.token });
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const create = async (resource: any) => ((await ehr.create({ resourceType: resource.resourceType as string, body: resource })) as unknown as { id: string }).id;
    id.anna = await create({ resourceType: 'Patient', name: [{ family: 'Anna' }] });
    id.dr = await create({ resourceType: 'Practitioner', name: [{ family: 'Who' }] });
    id.obs = await create({ resourceType: 'Observation', status: 'final', subject: { reference: `Patient/${id.anna}` }, code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] } });
  });
  after(async () => { await server?.close(); });

  it('the patient\'s app lists the practitioner\'s read of their Observation and the access report names them', async () => {
    const creds = newCredentials('dr');
    await server.app.auth.registry.addUser({ ...creds, fhirUser: `Practitioner/${id.dr}` });
    const { client } = server.app.auth.registry.addClient({ type: 'public', redirectUris: [UNUSED_REDIRECT_URI], scope: 'user/*.rs' });
    const token = (await codeFlow(server, { clientId: client.clientId, redirectUri: UNUSED_REDIRECT_URI, scope: 'user/*.rs', ...creds })).token.body.access_token as string;
    const dr = new Client({ baseUrl: server.base, bearerToken: token });
    await dr.read({ resourceType: 'Observation', id: id.obs! });
    await server.app.audit!.flush();

    const anna = new Client({ baseUrl: server.base, bearerToken: await patientToken(server, { patientId: id.anna!, scope: 'patient/*.rs' }) });
    const reads = (await anna.search({ resourceType: 'AuditEvent', searchParams: { subtype: 'read', agent: `Practitioner/${id.dr}`, _total: 'accurate' } })) as unknown as Bundle;
    assert.equal(reads.total, 1);
    const e = reads.entry![0]!.resource as AuditEvent;
    assert.equal(e.action, 'R');
    assert.ok(e.entity!.some((x) => x.what?.reference === `Observation/${id.obs}`));
    const report = (await anna.operation({ name: 'access-report', resourceType: 'Patient', id: id.anna, method: 'GET' })) as unknown as Parameters;
    const actors = report.parameter!.filter((p) => p.name === 'actor');
    assert.ok(actors.some((a) => a.part!.some((x) => x.valueReference?.reference === `Practitioner/${id.dr}`)));
    // The practitioner, whom consent lets read Anna's data, does not see the trail.
    const theirs = (await dr.search({ resourceType: 'AuditEvent', searchParams: { _summary: 'count' } })) as unknown as Bundle;
    assert.equal(theirs.total, 0);
  });

  it('refuses to write an AuditEvent, for the administrator too', async () => {
    await assert.rejects(
      ehr.create({ resourceType: 'AuditEvent', body: { resourceType: 'AuditEvent', recorded: '2026-01-01T00:00:00Z', type: { code: 'rest' }, agent: [{ requestor: true }], source: { observer: { display: 'x' } } } }),
      (err: { response?: { status: number } }) => err.response?.status === 405,
    );
  });
});
