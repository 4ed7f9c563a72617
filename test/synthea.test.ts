import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import type { Express } from 'express';
import { FHIR_JSON, FIXTURES, HAS_FIXTURES, testApp, WITH_FIXTURES } from './helpers.js';

const DIR = path.join(FIXTURES, 'synthea/smart-generated-sample-data');
const files = !HAS_FIXTURES ? [] : fs.readdirSync(DIR).filter((f) => f.endsWith('.json') && !/Information/.test(f)).sort();

interface Loaded { file: string; patientId: string; bundle: any }

/** Synthea patient bundles loaded as transactions, then searched. Expected results come from the fixture data itself. */
describe('Synthea bundles', WITH_FIXTURES, () => {
  let app: Express;
  let close: () => Promise<void>;
  const loaded: Loaded[] = [];

  before(async () => {
    const t = await testApp();
    app = t.app;
    close = t.close;
    for (const file of files) {
      const bundle = JSON.parse(fs.readFileSync(path.join(DIR, file), 'utf8'));
      const res = await request(app).post('/fhir').set('Content-Type', FHIR_JSON).send(JSON.stringify(bundle));
      assert.equal(res.status, 200, `${file}: ${JSON.stringify(res.body).slice(0, 500)}`);
      const i = bundle.entry.findIndex((e: any) => e.resource.resourceType === 'Patient');
      const loc: string = res.body.entry[i].response.location;
      loaded.push({ file, bundle, patientId: loc.split('/')[loc.split('/').indexOf('Patient') + 1]! });
    }
  });
  after(async () => close());

  it(`loads all ${files.length} patient bundles with every entry created`, async () => {
    assert.ok(files.length >= 10);
    const total = loaded.reduce((n, l) => n + l.bundle.entry.length, 0);
    const obsInFixtures = loaded.reduce((n, l) => n + l.bundle.entry.filter((e: any) => e.resource.resourceType === 'Observation').length, 0);
    const count = await request(app).get('/fhir/Observation?_summary=count');
    assert.equal(count.body.total, obsInFixtures);
    assert.ok(total > 1000);
  });

  const obsOf = (l: Loaded) => l.bundle.entry.map((e: any) => e.resource).filter((r: any) => r.resourceType === 'Observation');
  const codeOf = (o: any) => o.code.coding[0].code;

  it('finds one patient\'s vital signs by code and date range', async () => {
    const l = loaded[0]!;
    const obs = obsOf(l);
    const code = codeOf(obs.find((o: any) => o.category?.[0]?.coding?.[0]?.code === 'vital-signs'));
    const dates = obs.filter((o: any) => codeOf(o) === code).map((o: any) => o.effectiveDateTime as string).sort();
    assert.ok(dates.length >= 2, 'fixture has a series');
    const from = dates[Math.floor(dates.length / 2)]!;
    const expected = obs.filter((o: any) => codeOf(o) === code && Date.parse(o.effectiveDateTime) >= Date.parse(from)).length;
    const res = await request(app).get(`/fhir/Observation?subject=Patient/${l.patientId}&code=http://loinc.org|${code}&date=ge${encodeURIComponent(from)}&category=vital-signs&_total=accurate&_count=100`);
    assert.equal(res.status, 200);
    assert.equal(res.body.total, expected);
    assert.equal(res.body.entry.length, expected);
    for (const e of res.body.entry) {
      assert.equal(e.resource.subject.reference, `Patient/${l.patientId}`);
      assert.ok(Date.parse(e.resource.effectiveDateTime) >= Date.parse(from));
    }
    const before = await request(app).get(`/fhir/Observation?subject=Patient/${l.patientId}&code=${code}&date=lt${encodeURIComponent(from)}&_total=accurate`);
    assert.equal(before.body.total, dates.length - expected);
  });

  it('_include brings the subject Patient, _revinclude brings the Observations', async () => {
    const l = loaded[1]!;
    const inc = await request(app).get(`/fhir/Observation?subject=Patient/${l.patientId}&_include=Observation:subject&_count=5`);
    assert.equal(inc.status, 200);
    const included = inc.body.entry.filter((e: any) => e.search.mode === 'include');
    assert.equal(included.length, 1);
    assert.equal(included[0].resource.id, l.patientId);
    const rev = await request(app).get(`/fhir/Patient?_id=${l.patientId}&_revinclude=Observation:subject`);
    const revObs = rev.body.entry.filter((e: any) => e.search.mode === 'include' && e.resource.resourceType === 'Observation');
    assert.equal(revObs.length, obsOf(l).length);
    assert.equal(rev.body.entry.filter((e: any) => e.search.mode === 'match').length, 1);
  });

  it('compartment search and chained search agree with the fixture', async () => {
    const l = loaded[2]!;
    const family = l.bundle.entry.find((e: any) => e.resource.resourceType === 'Patient').resource.name[0].family;
    const comp = await request(app).get(`/fhir/Patient/${l.patientId}/Observation?_summary=count`);
    assert.equal(comp.body.total, obsOf(l).length);
    const chained = await request(app).get(`/fhir/Observation?subject:Patient.family=${encodeURIComponent(family)}&_total=accurate&_count=0`);
    const sameFamily = loaded.filter((x) => x.bundle.entry.find((e: any) => e.resource.resourceType === 'Patient').resource.name[0].family === family);
    assert.equal(chained.body.total, sameFamily.reduce((n, x) => n + obsOf(x).length, 0));
    const enc = l.bundle.entry.filter((e: any) => e.resource.resourceType === 'Encounter').length;
    const encRes = await request(app).get(`/fhir/Encounter?patient=${l.patientId}&_summary=count`);
    assert.equal(encRes.body.total, enc);
  });
});
