import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import type { Express } from 'express';
import { FHIR_JSON, testApp } from './helpers.js';

/** Search behaviour through HTTP on a small, fully known data set. */
describe('search over HTTP', () => {
  let app: Express;
  let close: () => Promise<void>;
  let base: string;
  const pid: Record<string, string> = {};

  const post = async (body: unknown) => {
    const r = await request(app).post(`/fhir/${(body as { resourceType: string }).resourceType}`).set('Content-Type', FHIR_JSON).send(JSON.stringify(body));
    assert.equal(r.status, 201, JSON.stringify(r.body));
    return r.body as { id: string };
  };
  const get = (qs: string) => request(app).get(`/fhir/${qs}`);
  const ids = (res: request.Response) => (res.body.entry ?? []).filter((e: any) => e.search?.mode === 'match').map((e: any) => e.resource.id);

  before(async () => {
    const t = await testApp();
    app = t.app;
    close = t.close;
    base = t.config.baseUrl;
    for (const [key, family, gender, birthDate] of [['ann', 'Andersson', 'female', '1950-02-01'], ['bob', 'Baker', 'male', '1980-06-15'], ['cid', 'Carter', 'other', '2001-12-31']] as const) {
      pid[key] = (await post({ resourceType: 'Patient', name: [{ family, given: [key] }], gender, birthDate })).id;
    }
    const obs = (p: string, code: string, value: number, date: string, extra: object = {}) => post({
      resourceType: 'Observation', status: 'final',
      category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-signs' }] }],
      code: { coding: [{ system: 'http://loinc.org', code, display: code === '8867-4' ? 'Heart rate' : 'Body weight' }] },
      subject: { reference: `Patient/${pid[p]}` }, effectiveDateTime: date,
      valueQuantity: { value, unit: code === '8867-4' ? '/min' : 'kg', system: 'http://unitsofmeasure.org', code: code === '8867-4' ? '/min' : 'kg' },
      ...extra,
    });
    await obs('ann', '8867-4', 60, '2024-01-01T08:00:00Z');
    await obs('ann', '8867-4', 72, '2024-02-01T08:00:00Z');
    await obs('ann', '29463-7', 61.5, '2024-03-01T08:00:00Z');
    await obs('bob', '8867-4', 90, '2024-01-15T08:00:00Z');
    await obs('bob', '29463-7', 85, '2023-06-01T08:00:00Z', { status: 'amended' });
    await obs('cid', '8867-4', 100, '2022-12-31', { category: undefined });
  });
  after(async () => close());

  it('token with and without system, OR by comma, AND by repetition', async () => {
    assert.equal((await get('Observation?code=http://loinc.org|8867-4&_total=accurate')).body.total, 4);
    assert.equal((await get('Observation?code=8867-4&_total=accurate')).body.total, 4);
    assert.equal((await get('Observation?code=http://snomed.info/sct|8867-4&_total=accurate')).body.total, 0);
    assert.equal((await get('Observation?code=8867-4,29463-7&_total=accurate')).body.total, 6);
    assert.equal((await get(`Observation?code=8867-4&subject=Patient/${pid.ann}&_total=accurate`)).body.total, 2);
    assert.equal((await get('Observation?status:not=final&_total=accurate')).body.total, 1);
    assert.equal((await get('Observation?category:missing=true&_total=accurate')).body.total, 1);
    assert.equal((await get('Observation?code:text=heart&_total=accurate')).body.total, 4);
  });

  it('union parameters (combo-code, combo-value-quantity) match the code and the components', async () => {
    const bp = await post({
      resourceType: 'Observation', status: 'final', code: { coding: [{ system: 'http://loinc.org', code: '85354-9' }] },
      subject: { reference: `Patient/${pid.bob}` }, effectiveDateTime: '2024-04-01T08:00:00Z',
      component: [
        { code: { coding: [{ system: 'http://loinc.org', code: '8480-6' }] }, valueQuantity: { value: 131, unit: 'mm[Hg]' } },
        { code: { coding: [{ system: 'http://loinc.org', code: '8462-4' }] }, valueQuantity: { value: 85, unit: 'mm[Hg]' } },
      ],
    });
    assert.deepEqual(ids(await get('Observation?combo-code=http://loinc.org|8480-6')), [bp.id]);
    assert.deepEqual(ids(await get('Observation?combo-code=http://loinc.org|85354-9')), [bp.id]);
    assert.equal((await get('Observation?combo-code=8867-4&_total=accurate')).body.total, 4, 'plain codes too');
    assert.deepEqual(ids(await get('Observation?combo-value-quantity=131&code=85354-9')), [bp.id]);
    assert.equal((await get('Observation?combo-code:missing=true&_total=accurate')).body.total, 0);
    const sorted = await get(`Observation?subject=Patient/${pid.bob}&_sort=-combo-value-quantity`);
    assert.deepEqual(sorted.body.entry.map((e: any) => e.resource.id)[0], bp.id, '131 sorts above 90 and 85');
    await request(app).delete(`/fhir/Observation/${bp.id}`);
  });

  it('date and quantity prefixes', async () => {
    assert.equal((await get('Observation?date=ge2024-01-01&date=lt2024-02-01&_total=accurate')).body.total, 2);
    assert.equal((await get('Observation?date=2024&_total=accurate')).body.total, 4);
    assert.equal((await get('Observation?date=eb2023-01-01&_total=accurate')).body.total, 1);
    assert.equal((await get('Observation?date=sa2024-01-31&_total=accurate')).body.total, 2);
    assert.equal((await get('Observation?value-quantity=gt80&_total=accurate')).body.total, 3);
    assert.equal((await get('Observation?value-quantity=le72|http://unitsofmeasure.org|/min&_total=accurate')).body.total, 2);
    assert.equal((await get('Observation?value-quantity=61.5||kg&_total=accurate')).body.total, 1);
    assert.equal((await get('Observation?value-quantity=ne60&code=8867-4&_total=accurate')).body.total, 3);
  });

  it('strings (blinded on Patient), _id, _lastUpdated, chains and compartments', async () => {
    assert.deepEqual(ids(await get('Patient?family=bak')), [pid.bob]);
    assert.deepEqual(ids(await get('Patient?name=BAKER')), [pid.bob], 'default string match ignores case');
    assert.deepEqual(ids(await get(`Patient?_id=${pid.ann},${pid.cid}&_sort=_id`)).sort(), [pid.ann, pid.cid].sort());
    assert.equal((await get('Patient?_lastUpdated=gt2000-01-01&_total=accurate')).body.total, 3);
    assert.equal((await get('Patient?_lastUpdated=lt2000-01-01&_total=accurate')).body.total, 0);
    assert.equal((await get('Observation?subject:Patient.family=Baker&_total=accurate')).body.total, 2);
    assert.equal((await get('Observation?subject.gender=female&_total=accurate')).body.total, 3);
    assert.equal((await get(`Patient/${pid.bob}/Observation?_total=accurate`)).body.total, 2);
    assert.equal((await get('Patient?birthdate=1980-06-15&_total=accurate')).body.total, 1);
  });

  it('code + date (+ subject) searches also find resources with a period or two dates', async () => {
    // A long period (no single narrow date) and a narrow one: both must match a date range they overlap.
    const wide = await post({ resourceType: 'Observation', status: 'final', code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
      subject: { reference: `Patient/${pid.cid}` }, effectivePeriod: { start: '2024-01-10T00:00:00Z', end: '2024-03-10T00:00:00Z' }, valueQuantity: { value: 55 } });
    const q = (extra: string) => get(`Observation?code=http://loinc.org|8867-4&date=ge2024-01-20&date=lt2024-01-25${extra}&_total=accurate`);
    assert.deepEqual(ids(await q('')), [wide.id]);
    assert.deepEqual(ids(await q(`&subject=Patient/${pid.cid}`)), [wide.id]);
    assert.equal((await q(`&subject=Patient/${pid.ann}`)).body.total, 0);
    const narrow = await get(`Observation?code=http://loinc.org|8867-4&date=ge2024-01-01&date=lt2024-01-02&subject=Patient/${pid.ann}`);
    assert.equal(narrow.body.entry.length, 1);
    assert.equal(narrow.body.entry[0].resource.valueQuantity.value, 60);
    await request(app).delete(`/fhir/Observation/${wide.id}`);
  });

  it('_sort ascending, descending and multi-key', async () => {
    const asc = await get('Observation?code=8867-4&_sort=value-quantity');
    assert.deepEqual(asc.body.entry.map((e: any) => e.resource.valueQuantity.value), [60, 72, 90, 100]);
    const desc = await get('Observation?code=8867-4&_sort=-date');
    assert.deepEqual(desc.body.entry.map((e: any) => e.resource.effectiveDateTime.slice(0, 10)), ['2024-02-01', '2024-01-15', '2024-01-01', '2022-12-31']);
    const multi = await get('Observation?_sort=code,-value-quantity');
    assert.deepEqual(multi.body.entry.map((e: any) => e.resource.valueQuantity.value), [85, 61.5, 100, 90, 72, 60]);
  });

  it('pages with stable next/previous links and exact totals', async () => {
    const p1 = await get('Observation?_sort=date&_count=2&_total=accurate');
    assert.equal(p1.body.total, 6);
    assert.equal(p1.body.entry.length, 2);
    const link = (res: request.Response, rel: string) => res.body.link.find((l: any) => l.relation === rel)?.url as string | undefined;
    const seen: string[] = ids(p1);
    let res = p1;
    for (let next = link(res, 'next'); next; next = link(res, 'next')) {
      assert.ok(next.startsWith(`${base}/Observation?`));
      res = await get(next.slice(base.length + 1));
      seen.push(...ids(res));
    }
    assert.equal(seen.length, 6);
    assert.equal(new Set(seen).size, 6);
    const prev = link(res, 'previous')!;
    const back = await get(prev.slice(base.length + 1));
    assert.deepEqual(ids(back), seen.slice(2, 4));
    assert.equal(link(p1, 'previous'), undefined);
  });

  it('_summary=count, _elements, _summary=true', async () => {
    const c = await get('Observation?_summary=count');
    assert.equal(c.body.total, 6);
    assert.equal(c.body.entry, undefined);
    const el = await get('Observation?_elements=status&_count=1');
    const r = el.body.entry[0].resource;
    assert.equal(r.status, 'final');
    assert.equal(r.code, undefined);
    assert.ok(r.meta.tag.some((t: any) => t.code === 'SUBSETTED'));
    const sum = await get(`Patient?_id=${pid.ann}&_summary=true`);
    assert.ok(sum.body.entry[0].resource.name);
  });

  it('POST _search with a form body equals GET', async () => {
    const res = await request(app).post('/fhir/Observation/_search').type('form').send('code=8867-4&date=ge2024-01-01');
    assert.equal(res.status, 200);
    assert.equal(res.body.entry.length, 3);
  });

  it('unknown parameters: ignored and reported when lenient, 400 when strict', async () => {
    const lenient = await get('Observation?code=8867-4&frobnicate=1&_total=accurate');
    assert.equal(lenient.status, 200);
    assert.equal(lenient.body.total, 4);
    const oo = lenient.body.entry.find((e: any) => e.search?.mode === 'outcome');
    assert.match(JSON.stringify(oo.resource), /frobnicate/);
    assert.ok(!lenient.body.link[0].url.includes('frobnicate'), 'the self link shows only what was applied');
    const strict = await get('Observation?code=8867-4&frobnicate=1').set('Prefer', 'handling=strict');
    assert.equal(strict.status, 400);
    assert.match(JSON.stringify(strict.body), /frobnicate/);
  });

  it('bad search values are clear 400s', async () => {
    // Past the URL size limit, POST _search carries them in the body.
    const many = await request(app).post('/fhir/Observation/_search').type('form').send(`_id=${Array.from({ length: 5000 }, (_, i) => `x${i}`).join(',')}`);
    assert.equal(many.status, 400);
    assert.match(JSON.stringify(many.body), /at most/);
    for (const qs of ['Observation?date=yesterday', 'Observation?value-quantity=gtabc', 'Observation?_count=-1', 'Observation?_sort=nope', 'Observation?code:bogus=1', 'Observation?_total=maybe']) {
      const res = await get(qs);
      assert.equal(res.status, 400, qs);
      assert.equal(res.body.resourceType, 'OperationOutcome');
    }
  });

  it('_include and _revinclude', async () => {
    const inc = await get(`Observation?subject=Patient/${pid.bob}&_include=Observation:subject`);
    assert.deepEqual(inc.body.entry.filter((e: any) => e.search.mode === 'include').map((e: any) => e.resource.id), [pid.bob]);
    const rev = await get(`Patient?_id=${pid.ann}&_revinclude=Observation:subject`);
    assert.equal(rev.body.entry.filter((e: any) => e.search.mode === 'include').length, 3);
  });
});
