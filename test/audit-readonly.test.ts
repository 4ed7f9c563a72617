import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import supertest from 'supertest';
import { FHIR_JSON, testApp } from './helpers.js';

type TestApp = Awaited<ReturnType<typeof testApp>>;

describe('AuditEvent is read-only through the REST API', () => {
  let t: TestApp;
  const event = {
    resourceType: 'AuditEvent', recorded: '2026-11-28T10:00:00Z',
    type: { system: 'http://terminology.hl7.org/CodeSystem/audit-event-type', code: 'rest' },
    agent: [{ requestor: true, who: { display: 'someone' } }], source: { observer: { display: 'elsewhere' } },
  };
  // The trail itself is off here: this is about REST writes being refused (and nothing stored),
  // which must not depend on whether the refusals' own AuditEvents were flushed yet.
  before(async () => { t = await testApp({ AUDIT: 'off' }); });
  after(async () => { await t?.close(); });

  it('refuses create, update, patch and delete (also conditional, also in Bundles) for a trusted system client', async () => {
    const api = supertest(t.app);
    const expect405 = async (r: supertest.Response) => {
      assert.equal(r.status, 405, r.text);
      assert.equal(r.body.resourceType, 'OperationOutcome');
      assert.match(r.body.issue[0].diagnostics, /written by the server only/);
    };
    await expect405(await api.post('/fhir/AuditEvent').set('content-type', FHIR_JSON).send(event));
    await expect405(await api.put('/fhir/AuditEvent/a1').set('content-type', FHIR_JSON).send({ ...event, id: 'a1' }));
    await expect405(await api.put('/fhir/AuditEvent?type=rest').set('content-type', FHIR_JSON).send(event));
    await expect405(await api.patch('/fhir/AuditEvent/a1').set('content-type', 'application/json-patch+json').send([{ op: 'remove', path: '/agent' }]));
    await expect405(await api.delete('/fhir/AuditEvent/a1'));
    await expect405(await api.delete('/fhir/AuditEvent?type=rest'));
    const bundle = await api.post('/fhir').set('content-type', FHIR_JSON).send({
      resourceType: 'Bundle', type: 'batch', entry: [{ resource: event, request: { method: 'POST', url: 'AuditEvent' } }],
    });
    assert.equal(bundle.status, 200);
    assert.match(bundle.body.entry[0].response.status, /^405/);
    assert.equal((await api.get('/fhir/AuditEvent?_summary=count')).body.total, 0, 'nothing was written');
  });

  it('still answers searches and $validate', async () => {
    const api = supertest(t.app);
    assert.equal((await api.get('/fhir/AuditEvent')).status, 200);
    assert.equal((await api.post('/fhir/AuditEvent/_search').type('form').send('type=rest')).status, 200);
    assert.equal((await api.post('/fhir/AuditEvent/$validate').set('content-type', FHIR_JSON).send(event)).status, 200);
  });
});
