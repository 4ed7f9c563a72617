import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import { loadConfig } from '../src/config.js';
import { FHIR_JSON, testApp } from './helpers.js';

type TestApp = Awaited<ReturnType<typeof testApp>>;

const identifiers = (n: number) => Array.from({ length: n }, (_, i) => ({ system: 'urn:mrn', value: `m${i}` }));
const telecoms = (n: number) => Array.from({ length: n }, (_, i) => ({ system: 'phone', value: `555-${i}` }));

describe('configured body limits: items per array, values per resource, Bundle entries', () => {
  let t: TestApp;
  const patients = async () => (await t.store.history({ resourceType: 'Patient', count: 0, offset: 0 })).total;
  const post = (path: string, body: unknown) => request(t.app).post(`/fhir/${path}`).set('Content-Type', FHIR_JSON).send(JSON.stringify(body));
  const transaction = (resources: unknown[]) => ({
    resourceType: 'Bundle', type: 'transaction', entry: resources.map((resource) => ({ request: { method: 'POST', url: 'Patient' }, resource })),
  });

  before(async () => { t = await testApp({ MAX_ARRAY_LENGTH: '50', MAX_ELEMENTS: '300', MAX_BUNDLE_ENTRIES: '3' }); });
  after(async () => { await t.close(); });

  it('an array longer than MAX_ARRAY_LENGTH is a 413 naming the array; one at the limit is stored', async () => {
    const res = await post('Patient', { resourceType: 'Patient', identifier: identifiers(51) });
    assert.equal(res.status, 413, res.text);
    assert.equal(res.body.resourceType, 'OperationOutcome');
    assert.equal(res.body.issue[0].code, 'too-costly');
    assert.match(res.body.issue[0].diagnostics, /An array may hold at most 50 items; Patient\.identifier has 51/);
    assert.deepEqual(res.body.issue[0].expression, ['Patient.identifier']);
    assert.equal((await post('Patient', { resourceType: 'Patient', identifier: identifiers(50) })).status, 201);
  });

  it('more than MAX_ELEMENTS values in one resource is a 413', async () => {
    const before = await patients();
    // 50 identifiers and 50 telecoms of three values each: 300 values and the resource's own.
    const res = await post('Patient', { resourceType: 'Patient', identifier: identifiers(50), telecom: telecoms(50) });
    assert.equal(res.status, 413, res.text);
    assert.match(res.body.issue[0].diagnostics, /A resource may hold at most 300 JSON values/);
    assert.equal(await patients(), before, 'nothing stored');
  });

  it('in a transaction the limits apply per entry: three entries of 150 values each go through, a fourth entry is too many', async () => {
    const before = await patients();
    const ok = await post('', transaction([1, 2, 3].map(() => ({ resourceType: 'Patient', identifier: identifiers(50) }))));
    assert.equal(ok.status, 200, ok.text);
    assert.deepEqual(ok.body.entry.map((e: { response: { status: string } }) => e.response.status), ['201 Created', '201 Created', '201 Created']);
    assert.equal(await patients(), before + 3);
    const tooMany = await post('', transaction([1, 2, 3, 4].map(() => ({ resourceType: 'Patient' }))));
    assert.equal(tooMany.status, 413, tooMany.text);
    assert.match(tooMany.body.issue[0].diagnostics, /A Bundle may have at most 3 entries; this one has 4/);
    const wideEntry = await post('', transaction([{ resourceType: 'Patient' }, { resourceType: 'Patient', identifier: identifiers(51) }]));
    assert.equal(wideEntry.status, 413, wideEntry.text);
    assert.match(wideEntry.body.issue[0].diagnostics, /Bundle\.entry\[1\]\.resource\.identifier has 51/);
    assert.equal(await patients(), before + 3, 'the refused transactions stored nothing');
  });

  it('a JSON Patch body is held to the same limits', async () => {
    const p = await post('Patient', { resourceType: 'Patient' });
    const ops = Array.from({ length: 51 }, (_, i) => ({ op: 'add', path: '/identifier/-', value: { value: `x${i}` } }));
    const res = await request(t.app).patch(`/fhir/Patient/${p.body.id}`).set('Content-Type', 'application/json-patch+json').send(JSON.stringify(ops));
    assert.equal(res.status, 413, res.text);
    assert.equal((await request(t.app).get(`/fhir/Patient/${p.body.id}`)).body.meta.versionId, '1');
  });

  it('patches add up: a patch that takes a resource past the limits is a 422, however small the patch', async () => {
    const p = await post('Patient', { resourceType: 'Patient', identifier: identifiers(50) });
    assert.equal(p.status, 201, p.text);
    const ops = [{ op: 'add', path: '/identifier/-', value: { system: 'urn:mrn', value: 'one-more' } }];
    const res = await request(t.app).patch(`/fhir/Patient/${p.body.id}`).set('Content-Type', 'application/json-patch+json').send(JSON.stringify(ops));
    assert.equal(res.status, 422, res.text);
    assert.match(res.body.issue[0].diagnostics, /The patched Patient would break a limit: An array may hold at most 50 items; Patient\.identifier has 51/);
    assert.equal((await request(t.app).get(`/fhir/Patient/${p.body.id}`)).body.meta.versionId, '1');
  });

  it('the settings must be positive integers', () => {
    assert.deepEqual(loadConfig({}).jsonLimits, { maxArrayLength: 1000, maxElements: 50_000, maxBundleEntries: 10_000 });
    for (const name of ['MAX_ARRAY_LENGTH', 'MAX_ELEMENTS', 'MAX_BUNDLE_ENTRIES']) {
      assert.throws(() => loadConfig({ [name]: '0' }), new RegExp(`${name} must be at least 1`));
      assert.throws(() => loadConfig({ [name]: 'many' }), new RegExp(`${name} must be a non-negative integer`));
    }
  });
});
