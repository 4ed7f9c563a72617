import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import type { Express } from 'express';
import { FHIR_JSON, readFixture, testApp, WITH_FIXTURES } from './helpers.js';
import { getResourceTypes } from '../src/fhir/definitions.js';

let app: Express;
let close: () => Promise<void>;
let base: string;

before(async () => {
  const t = await testApp();
  app = t.app;
  close = t.close;
  base = t.config.baseUrl;
});
after(async () => close());

const post = (path: string, body: unknown) => request(app).post(`/fhir/${path}`).set('Content-Type', FHIR_JSON).send(JSON.stringify(body));
const put = (path: string, body: unknown) => request(app).put(`/fhir/${path}`).set('Content-Type', FHIR_JSON).send(JSON.stringify(body));
const get = (path: string) => request(app).get(`/fhir/${path}`);

function assertOutcome(res: request.Response, status: number, text?: RegExp): void {
  assert.equal(res.status, status, JSON.stringify(res.body));
  assert.match(res.headers['content-type'] ?? '', /application\/fhir\+json/);
  assert.equal(res.body.resourceType, 'OperationOutcome');
  assert.ok(res.body.issue?.length > 0);
  if (text) assert.match(JSON.stringify(res.body.issue), text);
}

const patient = { resourceType: 'Patient', name: [{ family: 'Chalmers', given: ['Peter'] }], gender: 'male', birthDate: '1974-12-25' };

describe('capabilities', () => {
  it('GET /metadata returns a CapabilityStatement listing what is implemented', async () => {
    const res = await get('metadata');
    assert.equal(res.status, 200);
    assert.match(res.headers['content-type'], /application\/fhir\+json/);
    assert.equal(res.body.resourceType, 'CapabilityStatement');
    assert.equal(res.body.fhirVersion, '4.0.1');
    const obs = res.body.rest[0].resource.find((r: { type: string }) => r.type === 'Observation');
    assert.ok(obs.interaction.some((i: { code: string }) => i.code === 'patch'));
    assert.ok(obs.searchParam.some((p: { name: string; type: string }) => p.name === 'code' && p.type === 'token'));
    assert.ok(!obs.searchParam.some((p: { type: string }) => p.type === 'composite'), 'composite params are not implemented, so not listed');
    assert.equal(res.body.rest[0].resource.length, getResourceTypes().length);
    assert.ok(getResourceTypes().includes('Observation') && getResourceTypes().length >= 145);
    assert.ok(res.body.rest[0].interaction.some((i: { code: string }) => i.code === 'transaction'));
  });
});

describe('create, read, vread, update, delete', () => {
  let id: string;
  it('creates with a server-assigned id, 201, Location, ETag and Last-Modified', async () => {
    const res = await post('Patient', { ...patient, id: 'client-chosen' });
    assert.equal(res.status, 201);
    id = res.body.id;
    assert.notEqual(id, 'client-chosen');
    assert.equal(res.headers.location, `${base}/Patient/${id}/_history/1`);
    assert.equal(res.headers.etag, 'W/"1"');
    assert.ok(!Number.isNaN(Date.parse(res.headers['last-modified'])));
    assert.equal(res.body.meta.versionId, '1');
  });

  it('reads the current version with its ETag', async () => {
    const res = await get(`Patient/${id}`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.etag, 'W/"1"');
    assert.equal(res.body.name[0].family, 'Chalmers');
  });

  it('answers HEAD like GET, without a body', async () => {
    const res = await request(app).head(`/fhir/Patient/${id}`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.etag, 'W/"1"');
    assert.equal(res.text, undefined);
    assert.equal((await request(app).head('/fhir/Patient/nope')).status, 404);
  });

  it('accepts application/json too', async () => {
    const res = await request(app).post('/fhir/Patient').set('Content-Type', 'application/json').send(JSON.stringify(patient));
    assert.equal(res.status, 201);
  });

  it('updates with If-Match; a stale If-Match is 412', async () => {
    const ok = await put(`Patient/${id}`, { ...patient, id, gender: 'other' }).set('If-Match', 'W/"1"');
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.etag, 'W/"2"');
    assert.equal(ok.headers.location, `${base}/Patient/${id}/_history/2`);
    const stale = await put(`Patient/${id}`, { ...patient, id }).set('If-Match', 'W/"1"');
    assertOutcome(stale, 412, /version/i);
    assert.equal((await get(`Patient/${id}`)).body.gender, 'other');
  });

  it('vreads old versions; an unknown version is 404', async () => {
    const v1 = await get(`Patient/${id}/_history/1`);
    assert.equal(v1.status, 200);
    assert.equal(v1.body.gender, 'male');
    assert.equal(v1.headers.etag, 'W/"1"');
    assertOutcome(await get(`Patient/${id}/_history/9`), 404);
    assertOutcome(await get(`Patient/${id}/_history/abc`), 400);
  });

  it('update-as-create with a client id is 201', async () => {
    const res = await put('Patient/client-id-1', { ...patient, id: 'client-id-1' });
    assert.equal(res.status, 201);
    assert.equal(res.headers.location, `${base}/Patient/client-id-1/_history/1`);
  });

  it('rejects id mismatch, missing id, wrong type, unknown type, malformed JSON', async () => {
    assertOutcome(await put(`Patient/${id}`, { ...patient, id: 'other' }), 400, /does not match/);
    assertOutcome(await put(`Patient/${id}`, patient), 400, /id/);
    assertOutcome(await post('Patient', { resourceType: 'Observation', status: 'final', code: { text: 'x' } }), 400, /does not match/);
    assertOutcome(await post('Nonsense', { resourceType: 'Nonsense' }), 404, /Unknown resource type/);
    assertOutcome(await request(app).post('/fhir/Patient').set('Content-Type', FHIR_JSON).send('{"resourceType": "Patient",'), 400, /Malformed JSON/);
    assertOutcome(await post('Patient', [1, 2]), 400);
    assertOutcome(await get('Patient/bad$id'), 400, /Invalid resource id/);
  });

  it('rejects invalid content with an OperationOutcome that points at the element', async () => {
    const res = await post('Observation', { resourceType: 'Observation', status: 'final', valueQuantity: { value: 'heavy' } });
    assertOutcome(res, 400);
    const exprs = res.body.issue.flatMap((i: { expression?: string[] }) => i.expression ?? []);
    assert.ok(exprs.some((e: string) => e.startsWith('Observation.code')), JSON.stringify(res.body));
    assert.ok(exprs.some((e: string) => e.startsWith('Observation.value')), JSON.stringify(res.body));
  });

  it('deletes (versioned) and then reads 410 Gone; history keeps the delete', async () => {
    const del = await request(app).delete(`/fhir/Patient/${id}`);
    assert.equal(del.status, 204);
    assertOutcome(await get(`Patient/${id}`), 410, /deleted/);
    const h = await get(`Patient/${id}/_history`);
    assert.equal(h.status, 200);
    assert.equal(h.body.type, 'history');
    assert.equal(h.body.total, 3);
    assert.equal(h.body.entry[0].request.method, 'DELETE');
    assert.equal(h.body.entry[0].resource, undefined);
    assert.equal(h.body.entry[2].resource.gender, 'male');
    assertOutcome(await get('Patient/never-was'), 404);
  });

  it('recreates a deleted resource with PUT as a new version (201)', async () => {
    const res = await put(`Patient/${id}`, { ...patient, id });
    assert.equal(res.status, 201);
    assert.equal(res.headers.etag, 'W/"4"');
  });
});

describe('Prefer return', () => {
  it('minimal: no body; OperationOutcome: an outcome; representation: the resource', async () => {
    const min = await post('Patient', patient).set('Prefer', 'return=minimal');
    assert.equal(min.status, 201);
    assert.equal(min.text, '');
    assert.ok(min.headers.location);
    const oo = await post('Patient', patient).set('Prefer', 'return=OperationOutcome');
    assert.equal(oo.status, 201);
    assert.equal(oo.body.resourceType, 'OperationOutcome');
    const rep = await post('Patient', patient).set('Prefer', 'return=representation');
    assert.equal(rep.body.resourceType, 'Patient');
  });
});

describe('conditional interactions', () => {
  const ident = (v: string) => ({ ...patient, identifier: [{ system: 'http://hospital.example/mrn', value: v }] });

  it('If-None-Exist creates once, then returns the existing resource with 200', async () => {
    const a = await post('Patient', ident('MRN-1')).set('If-None-Exist', 'identifier=http://hospital.example/mrn|MRN-1');
    assert.equal(a.status, 201);
    const b = await post('Patient', ident('MRN-1')).set('If-None-Exist', 'identifier=http://hospital.example/mrn|MRN-1');
    assert.equal(b.status, 200);
    assert.equal(b.body.id, a.body.id);
  });

  it('If-None-Exist also takes the Type?criteria form', async () => {
    const a = await post('Patient', ident('MRN-2')).set('If-None-Exist', 'Patient?identifier=http://hospital.example/mrn|MRN-2');
    assert.equal(a.status, 201);
    const b = await post('Patient', ident('MRN-2')).set('If-None-Exist', 'Patient?identifier=http://hospital.example/mrn|MRN-2');
    assert.equal(b.status, 200);
    assert.equal(b.headers.location, `${base}/Patient/${a.body.id}/_history/1`);
  });

  it('If-None-Exist matching several is 412', async () => {
    await post('Patient', ident('DUP'));
    await post('Patient', ident('DUP'));
    assertOutcome(await post('Patient', ident('DUP')).set('If-None-Exist', 'identifier=http://hospital.example/mrn|DUP'), 412);
  });

  it('concurrent conditional creates of the same resource create exactly one', async () => {
    const results = await Promise.all(Array.from({ length: 12 }, () =>
      post('Patient', ident('RACE-1')).set('If-None-Exist', 'identifier=http://hospital.example/mrn|RACE-1')));
    assert.equal(results.filter((r) => r.status === 201).length, 1);
    assert.equal(new Set(results.map((r) => r.body.id)).size, 1);
    const s = await get('Patient?identifier=http://hospital.example/mrn|RACE-1&_total=accurate');
    assert.equal(s.body.total, 1);
  });

  it('concurrent updates with the same If-Match: exactly one wins', async () => {
    const c = await post('Patient', patient);
    const id = c.body.id;
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) =>
      put(`Patient/${id}`, { ...patient, id, gender: i % 2 ? 'female' : 'male' }).set('If-Match', 'W/"1"')));
    assert.equal(results.filter((r) => r.status === 200).length, 1);
    assert.equal(results.filter((r) => r.status === 412).length, 9);
    assert.equal((await get(`Patient/${id}`)).headers.etag, 'W/"2"');
  });

  it('conditional update by search: creates when none match, updates when one matches', async () => {
    const a = await put('Patient?identifier=http://hospital.example/mrn|CU-1', ident('CU-1'));
    assert.equal(a.status, 201);
    const b = await put('Patient?identifier=http://hospital.example/mrn|CU-1', { ...ident('CU-1'), gender: 'female' });
    assert.equal(b.status, 200);
    assert.equal(b.body.id, a.body.id);
    assert.equal(b.headers.etag, 'W/"2"');
  });

  it('conditional delete by search deletes the one match; several matches is 412', async () => {
    const a = await post('Patient', ident('CD-1'));
    const del = await request(app).delete('/fhir/Patient?identifier=http://hospital.example/mrn|CD-1');
    assert.equal(del.status, 204);
    assertOutcome(await get(`Patient/${a.body.id}`), 410);
    assertOutcome(await request(app).delete('/fhir/Patient?identifier=http://hospital.example/mrn|DUP'), 412);
  });
});

describe('PATCH (JSON Patch)', () => {
  it('applies a JSON Patch, honours If-Match, and validates the result', async () => {
    const c = await post('Patient', patient);
    const id = c.body.id;
    const ok = await request(app).patch(`/fhir/Patient/${id}`).set('Content-Type', 'application/json-patch+json').set('If-Match', 'W/"1"')
      .send(JSON.stringify([{ op: 'replace', path: '/gender', value: 'female' }, { op: 'add', path: '/active', value: true }]));
    assert.equal(ok.status, 200);
    assert.equal(ok.body.gender, 'female');
    assert.equal(ok.body.active, true);
    assert.equal(ok.headers.etag, 'W/"2"');
    const stale = await request(app).patch(`/fhir/Patient/${id}`).set('Content-Type', 'application/json-patch+json').set('If-Match', 'W/"1"')
      .send(JSON.stringify([{ op: 'replace', path: '/gender', value: 'male' }]));
    assertOutcome(stale, 412);
    const invalid = await request(app).patch(`/fhir/Patient/${id}`).set('Content-Type', 'application/json-patch+json')
      .send(JSON.stringify([{ op: 'add', path: '/birthDate', value: 'yesterday' }]));
    assert.ok(invalid.status === 422 || invalid.status === 400, String(invalid.status));
    assert.equal(invalid.body.resourceType, 'OperationOutcome');
    const failedTest = await request(app).patch(`/fhir/Patient/${id}`).set('Content-Type', 'application/json-patch+json')
      .send(JSON.stringify([{ op: 'test', path: '/gender', value: 'male' }]));
    assertOutcome(failedTest, 422, /test/);
    const badOps = await request(app).patch(`/fhir/Patient/${id}`).set('Content-Type', 'application/json-patch+json').send(JSON.stringify({ op: 'x' }));
    assertOutcome(badOps, 400);
    const wrongType = await request(app).patch(`/fhir/Patient/${id}`).set('Content-Type', FHIR_JSON).send(JSON.stringify([{ op: 'remove', path: '/active' }]));
    assertOutcome(wrongType, 415, /json-patch/);
    assert.equal((await get(`Patient/${id}`)).headers.etag, 'W/"2"');
  });
});

describe('JSON only', () => {
  it('_format=xml and Accept: application/fhir+xml are 406; an XML body is 415', async () => {
    assertOutcome(await get('metadata?_format=xml'), 406, /JSON/);
    assertOutcome(await get('Patient').set('Accept', 'application/fhir+xml'), 406, /JSON/);
    const xml = await request(app).post('/fhir/Patient').set('Content-Type', 'application/fhir+xml').send('<Patient xmlns="http://hl7.org/fhir"/>');
    assertOutcome(xml, 415, /XML/);
    const form = await request(app).post('/fhir/Patient').type('form').send('gender=male');
    assertOutcome(form, 415, /_search/);
    const ok = await get('metadata?_format=json').set('Accept', 'application/fhir+json');
    assert.equal(ok.status, 200);
  });
});

describe('history', () => {
  it('type and system history with _count, _since and paging links', async () => {
    const t0 = new Date().toISOString();
    await new Promise((r) => setTimeout(r, 5));
    for (let i = 0; i < 3; i++) await post('Device', { resourceType: 'Device', status: 'active' });
    const type = await get('Device/_history?_count=2');
    assert.equal(type.status, 200);
    assert.equal(type.body.total, 3);
    assert.equal(type.body.entry.length, 2);
    const next = type.body.link.find((l: { relation: string }) => l.relation === 'next');
    assert.ok(next);
    const page2 = await get(next.url.slice(base.length + 1));
    assert.equal(page2.body.entry.length, 1);
    await post('Device', { resourceType: 'Device', status: 'inactive' });
    const again = await get(next.url.slice(base.length + 1));
    assert.equal(again.body.entry[0].fullUrl, page2.body.entry[0].fullUrl, 'a page link keeps its snapshot');
    const since = await get(`_history?_since=${encodeURIComponent(t0)}&_count=100`);
    // System history holds every type, also the AuditEvents of these requests.
    const types = (since.body.entry as Array<{ resource?: { resourceType: string } }>).map((e) => e.resource?.resourceType);
    assert.equal(types.filter((t) => t === 'Device').length, 4);
    assert.equal(since.body.total, types.length);
    assertOutcome(await get('_history?_since=last-tuesday'), 400, /_since/);
  });
});

describe('$validate', () => {
  it('returns 200 for valid content and 400 with element paths for invalid', async () => {
    const ok = await post('Patient/$validate', patient);
    assert.equal(ok.status, 200);
    assert.equal(ok.body.resourceType, 'OperationOutcome');
    const bad = await post('Observation/$validate', { resourceType: 'Observation', status: 'final', foo: 1 });
    assertOutcome(bad, 400);
    assert.match(JSON.stringify(bad.body), /Observation\.code/);
    const params = await post('Patient/$validate', { resourceType: 'Parameters', parameter: [{ name: 'resource', resource: patient }] });
    assert.equal(params.status, 200);
    const before = await get('Patient?_summary=count');
    await post('Patient/$validate', patient);
    assert.equal((await get('Patient?_summary=count')).body.total, before.body.total, '$validate stores nothing');
  });
});

describe('errors never crash the server', () => {
  it('unknown routes, methods and junk give OperationOutcomes', async () => {
    assertOutcome(await request(app).get('/nope'), 404);
    assertOutcome(await request(app).delete('/fhir/metadata'), 405);
    assertOutcome(await get('Patient/x/_history/1/extra'), 404);
    assertOutcome(await request(app).get('/fhir/Patient/%E0%A4%A'), 400);
    assertOutcome(await post('Patient', { resourceType: 'Patient', __proto__: { polluted: true }, birthDate: 12 }), 400);
    const big = await request(app).post('/fhir/Patient').set('Content-Type', FHIR_JSON).send('"' + 'x'.repeat(17 * 1024 * 1024) + '"');
    assertOutcome(big, 413);
    assert.equal((await get('metadata')).status, 200);
  });

  it('loads an HL7 example unchanged and round-trips it', WITH_FIXTURES, async () => {
    const obs = readFixture('hl7-examples/r4-core/Observation-f001.json');
    const res = await put(`Observation/${obs.id}`, obs);
    assert.equal(res.status, 201, JSON.stringify(res.body));
    const back = await get(`Observation/${obs.id}`);
    const { meta, ...rest } = back.body;
    const { meta: _m, ...orig } = obs;
    assert.deepEqual(rest, orig);
    assert.equal(meta.versionId, '1');
  });
});
