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

/** Extensions nested `levels` deep, as JSON text (JSON.stringify itself gives up long before 3,000). */
const deepExtension = (levels: number) => '{"url":"http://x","extension":['.repeat(levels) + '{"url":"http://x","valueString":"a"}' + ']}'.repeat(levels);
const DEEP_OBSERVATION = `{"resourceType":"Observation","status":"final","code":{"text":"x"},"extension":[${deepExtension(3000)}]}`;
const LONE_SURROGATE_OBSERVATION = '{"resourceType":"Observation","status":"final","code":{"text":"x\\ud800y"}}';
const LONE_SURROGATE_KEY = '{"resourceType":"Observation","status":"final","code":{"text":"x"},"\\udc00":1}';
const identifiers = (n: number) => Array.from({ length: n }, (_, i) => ({ system: 'urn:mrn', value: `m${i}` }));

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

  it('inputs that gave a 500: deep nesting, a lone surrogate, 1,000 repeated search parameters, 200,000 identifiers', async () => {
    const observations = await observationVersions();
    const patients = (await t.store.history({ resourceType: 'Patient', count: 0, offset: 0 })).total;
    const post = (path: string, body: string) => request(t.app).post(`/fhir/${path}`).set('Content-Type', FHIR_JSON).send(body);
    const put = (path: string, body: string) => request(t.app).put(`/fhir/${path}`).set('Content-Type', FHIR_JSON).send(body);
    const entry = (resource: string) => `{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"POST","url":"Observation"},"resource":${resource}}]}`;
    const expect = async (res: request.Response | Promise<request.Response>, status: number, message: RegExp, what: string) => {
      const r = await res;
      assertRefused(r, what);
      assert.equal(r.status, status, `${what}: ${r.text.slice(0, 300)}`);
      assert.match(r.body.issue[0].diagnostics, message, what);
    };

    // Extensions nested 3,000 deep; 65 levels are one too many.
    const deep = /nested more than 64 levels/;
    await expect(post('Observation', DEEP_OBSERVATION), 400, deep, 'create nested 3,000 deep');
    await expect(put(`Observation/${obsId}`, DEEP_OBSERVATION.replace('{', `{"id":"${obsId}",`)), 400, deep, 'update nested 3,000 deep');
    await expect(post('Observation/$validate', DEEP_OBSERVATION), 400, deep, '$validate nested 3,000 deep');
    await expect(post('', entry(DEEP_OBSERVATION)), 400, deep, 'transaction entry nested 3,000 deep');
    const nested = (levels: number) => `{"resourceType":"Observation","status":"final","code":{"text":"x"},"extension":[${deepExtension(levels)}]}`;
    // The Observation is level 1, its extension array 2, each extension object and array two more.
    await expect(post('Observation/$validate', nested(31)), 400, deep, '65 levels');
    assert.equal((await post('Observation/$validate', nested(30))).status, 200, '63 levels are valid');
    // A JSON Patch inside a transaction (base64 in a Binary) cannot build it either: its result is checked too.
    const deepPatch = Buffer.from(`[{"op":"add","path":"/extension","value":[${deepExtension(100)}]}]`).toString('base64');
    const patched = await post('', `{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"PATCH","url":"Observation/${obsId}"},`
      + `"resource":{"resourceType":"Binary","contentType":"application/json-patch+json","data":"${deepPatch}"}}]}`);
    assertRefused(patched, 'PATCH entry nesting 100 deep');
    assert.match(patched.text, /nested more than 64 levels/);

    // A lone UTF-16 surrogate (JSON.parse accepts the escape; the content hash cannot take it).
    const unicode = /Invalid Unicode .*lone UTF-16 surrogate/;
    await expect(post('Observation', LONE_SURROGATE_OBSERVATION), 400, unicode, 'create with a lone surrogate');
    await expect(post('Observation', LONE_SURROGATE_KEY), 400, unicode, 'a lone surrogate in a property name');
    await expect(put(`Observation/${obsId}`, LONE_SURROGATE_OBSERVATION.replace('{', `{"id":"${obsId}",`)), 400, unicode, 'update with a lone surrogate');
    await expect(post('', entry(LONE_SURROGATE_OBSERVATION)), 400, unicode, 'transaction entry with a lone surrogate');
    await expect(request(t.app).patch(`/fhir/Observation/${obsId}`).set('Content-Type', 'application/json-patch+json').send('[{"op":"add","path":"/note","value":[{"text":"\\udfff"}]}]'),
      400, unicode, 'PATCH with a lone surrogate');
    const pair = await post('Observation', '{"resourceType":"Observation","status":"final","code":{"text":"pair \\ud83d\\ude00"}}');
    assert.equal(pair.status, 201, 'a surrogate pair is fine');
    assert.equal(pair.body.code.text, 'pair \u{1F600}');

    // 1,000 repetitions of one parameter (SQLite: "Expression tree is too large"), by GET, POST _search and conditional create.
    const repeated = (n: number, p = 'code', v = (i: number) => `c${i}`) => Array.from({ length: n }, (_, i) => `${p}=${v(i)}`).join('&');
    const tooMany = /at most 100 search parameters/;
    await expect(request(t.app).get(`/fhir/Observation?${repeated(1000)}`), 400, tooMany, 'GET with 1,000 repeated parameters');
    await expect(request(t.app).post('/fhir/Observation/_search').type('form').send(repeated(1000)), 400, tooMany, '_search with 1,000 repeated parameters');
    await expect(request(t.app).get(`/fhir/Observation?${repeated(101, 'subject.name')}`), 400, tooMany, '101 chains');
    await expect(request(t.app).post('/fhir/Observation').set('Content-Type', FHIR_JSON).set('If-None-Exist', repeated(150))
      .send({ resourceType: 'Observation', status: 'final', code: { text: 'x' } }), 400, tooMany, 'If-None-Exist with 150 parameters');
    await expect(request(t.app).get(`/fhir/Observation?code=${Array.from({ length: 500 }, (_, i) => `c${i}`).join(',')}`), 400, /at most 100 comma-separated values/, '500 values of one parameter');
    // At the limits the searches run.
    const atLimit = [repeated(100), repeated(100, 'date', () => 'ge2020-01-01'), `${repeated(99)}&subject.name=${Array.from({ length: 100 }, (_, i) => `n${i}`).join(',')}`,
      repeated(100, 'subject.name', (i) => Array.from({ length: 10 }, (_, j) => `n${i}-${j}`).join(',')), `code=${Array.from({ length: 100 }, (_, i) => `s|c${i}`).join(',')}`];
    for (const q of atLimit) {
      const res = await request(t.app).post('/fhir/Observation/_search').type('form').send(q);
      assert.equal(res.status, 200, `${q.slice(0, 60)}: ${res.text.slice(0, 300)}`);
      assert.equal(res.body.resourceType, 'Bundle');
    }

    // 200,000 identifiers (1.1 GB of RSS once): 413 from the array limit, also inside a transaction.
    const huge = JSON.stringify({ resourceType: 'Patient', identifier: identifiers(200_000) });
    const tooLarge = /at most 1000 items; Patient\.identifier has 200000/;
    await expect(post('Patient', huge), 413, tooLarge, 'Patient with 200,000 identifiers');
    await expect(post('Patient/$validate', huge), 413, tooLarge, '$validate of 200,000 identifiers');
    await expect(post('', `{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"POST","url":"Patient"},"resource":${huge}}]}`),
      413, /at most 1000 items; Bundle\.entry\[0\]\.resource\.identifier has 200000/, 'transaction entry with 200,000 identifiers');
    // Values in all: 1,000 identifiers of 20 extensions each (64,000 values) pass the array limit but not the 50,000 values.
    const wide = JSON.stringify({ resourceType: 'Patient', identifier: identifiers(1000).map((i) => ({ ...i, extension: Array.from({ length: 20 }, () => ({ url: 'http://x', valueString: 'y' })) })) });
    await expect(post('Patient', wide), 413, /at most 50000 JSON values/, 'Patient with 81,000 values');

    assert.equal(await observationVersions(), observations + 1, 'only the surrogate pair was stored');
    assert.equal((await t.store.history({ resourceType: 'Patient', count: 0, offset: 0 })).total, patients, 'no Patient stored');
    const cur = await request(t.app).get(`/fhir/Observation/${obsId}`);
    assert.equal(cur.status, 200, 'the server still answers');
    assert.equal(cur.body.meta.versionId, '1');
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
