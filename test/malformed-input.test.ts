import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import { testApp } from './helpers.js';

type TestApp = Awaited<ReturnType<typeof testApp>>;

const FHIR_JSON = 'application/fhir+json';

/** Path segments and search values no client should send. */
const ODD_VALUES = ['%00', '%ff', '%', '..', '..%2F..', 'a'.repeat(3000), '-1', '1e999', 'null', '[]', '{}', '%E2%80%AE', '$', '*', '_history', "'%20OR%201=1--"];
const SEARCH_PARAMS = ['_id', '_count', '_sort', '_include', '_revinclude', '_elements', '_summary', '_total', 'date', 'code', 'subject', 'subject:Patient.name',
  'value-quantity', '_lastUpdated', 'patient', 'code:text', 'subject:missing', '_format', '_offset', 'foo'];

/** Bodies that no write may accept: each must be refused with nothing stored. */
const INVALID_BODIES: Array<[string, string]> = [
  ['empty', ''],
  ['truncated JSON', '{'],
  ['null', 'null'],
  ['array', '[]'],
  ['number', '1'],
  ['string', '"x"'],
  ['resourceType null', '{"resourceType":null}'],
  ['status a number', '{"resourceType":"Observation","status":5,"code":{"text":"x"}}'],
  ['no status or code', '{"resourceType":"Observation"}'],
  ['month 13', '{"resourceType":"Observation","status":"final","code":{"text":"x"},"effectiveDateTime":"2020-13-45"}'],
  ['value beyond a double', '{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":1e400}}'],
  ['unknown element', '{"resourceType":"Observation","status":"final","code":{"text":"x"},"colour":"red"}'],
  ['prototype key', '{"resourceType":"Observation","status":"final","code":{"text":"x"},"__proto__":{"status":"final"},"constructor":{"prototype":{}}}'],
];

/** Bundles that must be refused as a whole. */
const INVALID_BUNDLES: Array<[string, string]> = [
  ['entry without resource', '{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"POST","url":"Observation"}}]}'],
  ['entry that is null', '{"resourceType":"Bundle","type":"transaction","entry":[null]}'],
  ['entries that are numbers', '{"resourceType":"Bundle","type":"transaction","entry":[1,2]}'],
  ['entry list a string', '{"resourceType":"Bundle","type":"transaction","entry":"x"}'],
  ['searchset posted', '{"resourceType":"Bundle","type":"searchset"}'],
  ['valid entry then an invalid one', JSON.stringify({
    resourceType: 'Bundle', type: 'transaction', entry: [
      { fullUrl: 'urn:uuid:7f1e6c1a-0000-4000-8000-000000000001', resource: { resourceType: 'Observation', status: 'final', code: { text: 'ok' } }, request: { method: 'POST', url: 'Observation' } },
      { resource: { resourceType: 'Observation', status: 'nonsense', code: { text: 'bad' } }, request: { method: 'POST', url: 'Observation' } },
    ],
  })],
  ['request escaping the base', '{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"GET","url":"/fhir/Observation/../../metadata"}}]}'],
];

const BAD_PATCHES = ['[{"op":"replace","path":"/id","value":"y"}]', '[{"op":"remove","path":"/resourceType"}]', '[{"op":"move","from":"/status","path":"/status/x"}]',
  '[{"op":"test","path":"/status","value":"x"}]', '[{"op":"copy","from":"/a/b/c","path":"/x"}]', '[{"op":"replace","path":"/status","value":{"a":1}}]',
  '[{"op":"add","path":"/__proto__/x","value":1}]', '{"op":"add"}', '[null]', 'not json'];

describe('malformed and hostile input: a 4xx OperationOutcome, nothing stored, the process unharmed', () => {
  let t: TestApp;
  let patientId: string;
  let obsId: string;

  /** Every FHIR failure is an OperationOutcome with a 4xx status and something to read. */
  const assertRefused = (res: request.Response, what: string) => {
    assert.ok(res.status >= 400 && res.status < 500, `${what}: status ${res.status} ${res.text.slice(0, 200)}`);
    assert.equal(res.body?.resourceType, 'OperationOutcome', `${what}: ${res.text.slice(0, 200)}`);
    assert.ok(res.body.issue?.[0]?.diagnostics || res.body.issue?.[0]?.details?.text, `${what}: the OperationOutcome says what is wrong`);
  };
  /** Anything but a server error; a refusal is an OperationOutcome. */
  const assertHandled = (res: request.Response, what: string) => {
    assert.ok(res.status < 500, `${what}: status ${res.status} ${res.text.slice(0, 200)}`);
    if (res.status >= 400) assert.equal(res.body?.resourceType, 'OperationOutcome', `${what}: ${res.text.slice(0, 200)}`);
  };
  const observationVersions = async () => (await t.store.history({ resourceType: 'Observation', count: 0, offset: 0 })).total;

  before(async () => {
    t = await testApp();
    const p = await request(t.app).post('/fhir/Patient').set('Content-Type', FHIR_JSON).send({ resourceType: 'Patient', name: [{ family: 'Odd' }] });
    patientId = p.body.id;
    const o = await request(t.app).post('/fhir/Observation').set('Content-Type', FHIR_JSON)
      .send({ resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${patientId}` } });
    obsId = o.body.id;
    assert.ok(patientId && obsId);
  });
  after(async () => { await t.close(); });

  it('odd ids, path segments and search values', async () => {
    for (const v of ODD_VALUES) {
      for (const path of [`Observation/${v}`, v, `Observation/${obsId}/_history/${v}`, `Patient/${v}/Observation`, `Patient/${patientId}/${v}`,
        `_history?_since=${v}&_count=${v}`, `AuditEvent?date=${v}&agent=${v}&entity=${v}`]) {
        assertHandled(await request(t.app).get(`/fhir/${path}`), `GET ${path.slice(0, 80)}`);
      }
      assertHandled(await request(t.app).delete(`/fhir/Observation/${v}`), `DELETE Observation/${v.slice(0, 40)}`);
      for (const p of SEARCH_PARAMS) {
        assertHandled(await request(t.app).get(`/fhir/Observation?${p}=${v}`), `search ${p}=${v.slice(0, 40)}`);
        assertHandled(await request(t.app).get(`/fhir/Observation?${p}=ge${v}`), `search ${p}=ge${v.slice(0, 40)}`);
      }
    }
    assert.equal((await request(t.app).get(`/fhir/Observation/${obsId}`)).status, 200);
  });

  it('invalid bodies on every kind of write are refused and store nothing', async () => {
    const before = await observationVersions();
    for (const [name, body] of INVALID_BODIES) {
      const send = (r: request.Test) => r.set('Content-Type', FHIR_JSON).send(body);
      assertRefused(await send(request(t.app).post('/fhir/Observation')), `create: ${name}`);
      assertRefused(await send(request(t.app).put(`/fhir/Observation/${obsId}`)), `update: ${name}`);
      assertRefused(await send(request(t.app).put('/fhir/Observation?code=nothing-matches')), `conditional update: ${name}`);
      assertRefused(await send(request(t.app).post('/fhir/Observation/$validate')), `$validate: ${name}`);
      assertRefused(await send(request(t.app).post('/fhir')), `Bundle: ${name}`);
    }
    for (const [name, body] of INVALID_BUNDLES) {
      assertRefused(await request(t.app).post('/fhir').set('Content-Type', FHIR_JSON).send(body), `transaction: ${name}`);
    }
    for (const patch of BAD_PATCHES) {
      assertRefused(await request(t.app).patch(`/fhir/Observation/${obsId}`).set('Content-Type', 'application/json-patch+json').send(patch), `PATCH ${patch}`);
    }
    assert.equal(await observationVersions(), before, 'no refused write stored a version');
    const cur = await request(t.app).get(`/fhir/Observation/${obsId}`);
    assert.equal(cur.body.meta.versionId, '1');
    assert.equal(cur.body.status, 'final');
  });

  it('a code outside its required value set, or an element named like an Object member, is invalid and points at the element', async () => {
    const validate = (type: string, body: object) => request(t.app).post(`/fhir/${type}/$validate`).set('Content-Type', FHIR_JSON).send(body);
    const expressions = (res: request.Response) => (res.body.issue as Array<{ expression?: string[] }>).flatMap((i) => i.expression ?? []);
    const gender = await validate('Patient', { resourceType: 'Patient', gender: 'robot', name: [{ use: 'official' }, { use: 'nickname2' }] });
    assertRefused(gender, 'gender robot');
    assert.deepEqual(expressions(gender).sort(), ['Patient.gender', 'Patient.name[1].use']);
    assert.match(gender.body.issue[0].diagnostics, /not in the required value set http:\/\/hl7\.org\/fhir\/ValueSet\/administrative-gender/);
    const comparator = await validate('Observation', { resourceType: 'Observation', status: 'final', code: { text: 'bp' },
      component: [{ code: { text: 'sys' }, valueQuantity: { value: 120, comparator: '<' } }, { code: { text: 'dia' }, valueQuantity: { value: 80, comparator: '=<' } }] });
    assertRefused(comparator, 'comparator =<');
    assert.deepEqual(expressions(comparator), ['Observation.component[1].valueQuantity.comparator']);
    const contained = await validate('Observation', { resourceType: 'Observation', status: 'final', code: { text: 'x' }, contained: [{ resourceType: 'Patient', id: 'p', gender: 'x' }] });
    assert.deepEqual(expressions(contained), ['Observation.contained[0].gender']);
    for (const key of ['constructor', 'toString', 'hasOwnProperty', '__proto__']) {
      const res = await validate('Observation', JSON.parse(`{"resourceType":"Observation","status":"final","code":{"text":"x","${key}":{"a":1}}}`));
      assertRefused(res, key);
      assert.deepEqual(expressions(res), [`Observation.code.${key}`]);
    }
    // The same resources with allowed values are valid.
    assert.equal((await validate('Patient', { resourceType: 'Patient', gender: 'female', name: [{ use: 'nickname' }] })).status, 200);
    assert.equal((await validate('Observation', { resourceType: 'Observation', status: 'amended', code: { text: 'x' }, valueQuantity: { value: 1, comparator: '>=' } })).status, 200);
    // And a write is refused the same way, with nothing stored.
    const res = await request(t.app).post('/fhir/Patient').set('Content-Type', FHIR_JSON).send({ resourceType: 'Patient', gender: 'robot' });
    assertRefused(res, 'create with gender robot');
    assert.equal((await t.store.search({ resourceType: 'Patient', filters: [], sort: [], count: 0, offset: 0, total: 'accurate' })).total, 1);
  });

  it('odd headers and credentials', async () => {
    const obs = { resourceType: 'Observation', status: 'final', code: { text: 'x' } };
    for (const [name, value] of [['if-match', 'W/"x"'], ['if-match', '"'], ['if-none-exist', '%%%'], ['if-none-exist', 'foo=bar&&&'], ['prefer', 'return=???'],
      ['if-none-match', '*'], ['if-modified-since', 'garbage'], ['content-type', 'application/fhir+json; charset=latin1']] as const) {
      assertHandled(await request(t.app).put(`/fhir/Observation/${obsId}`).set('Content-Type', FHIR_JSON).set(name, value).send({ ...obs, id: obsId }), `PUT with ${name}: ${value}`);
      assertHandled(await request(t.app).get(`/fhir/Observation/${obsId}`).set(name, value), `GET with ${name}: ${value}`);
    }
    for (const authorization of ['Bearer', 'Bearer x', 'Bearer a.b.c', 'Basic eDp5', `Bearer ${t.token!.slice(0, -3)}abc`]) {
      const res = await request(t.raw).get(`/fhir/Observation/${obsId}`).set('Authorization', authorization);
      assertRefused(res, `Authorization: ${authorization.slice(0, 20)}`);
      assert.equal(res.status, 401);
    }
    assert.equal((await request(t.app).get('/fhir/metadata')).status, 200);
  });
});
