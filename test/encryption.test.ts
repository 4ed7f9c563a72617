import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import type { Express } from 'express';
import { FHIR_JSON, testApp } from './helpers.js';

/** Distinctive values so a hit in the raw files can only come from these resources. */
const SECRET = {
  family: 'Quxworthington',
  given: 'Zebediah',
  mrn: 'MRN-77441-ZQ',
  phone: '+1-555-0199-8731',
  line: '4242 Hollowbrook Lane',
  city: 'Wexmoorfield',
  narrative: 'Patient reports sleepwalking near Blinkerton bridge',
  valueString: 'Trace of glyphosate-xylophone marker',
};

describe('encryption at rest', () => {
  let app: Express;
  let dataDir: string;
  let close: () => Promise<void>;
  let patientId: string;

  before(async () => {
    const t = await testApp();
    app = t.app;
    close = t.close;
    dataDir = t.config.dataDir;
    const p = await request(app).post('/fhir/Patient').set('Content-Type', FHIR_JSON).send(JSON.stringify({
      resourceType: 'Patient',
      identifier: [{ system: 'http://hospital.example/mrn', value: SECRET.mrn }],
      name: [{ family: SECRET.family, given: [SECRET.given] }],
      telecom: [{ system: 'phone', value: SECRET.phone }],
      address: [{ line: [SECRET.line], city: SECRET.city }],
      birthDate: '1961-07-19',
    }));
    assert.equal(p.status, 201);
    patientId = p.body.id;
    const o = await request(app).post('/fhir/Observation').set('Content-Type', FHIR_JSON).send(JSON.stringify({
      resourceType: 'Observation',
      status: 'final',
      text: { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml">${SECRET.narrative}</div>` },
      code: { text: 'Lab note' },
      subject: { reference: `Patient/${patientId}` },
      valueString: SECRET.valueString,
    }));
    assert.equal(o.status, 201);
  });
  after(async () => close());

  it('creates a 0600 key file in DATA_DIR', () => {
    const st = fs.statSync(path.join(dataDir, 'keys', 'master.key'));
    assert.equal(st.mode & 0o777, 0o600);
  });

  it('keeps no plaintext of names, identifiers, phone, address, narrative or string values in the database or its WAL', () => {
    const files = fs.readdirSync(dataDir).filter((f) => f.startsWith('custos.db'));
    assert.ok(files.includes('custos.db'));
    assert.ok(files.includes('custos.db-wal'), 'the WAL is checked too');
    const raw = Buffer.concat(files.map((f) => fs.readFileSync(path.join(dataDir, f))));
    // Sanity: the scan does find plain values that are meant to be there (resource type names).
    assert.ok(raw.includes(Buffer.from('Observation')));
    for (const [what, value] of Object.entries(SECRET)) {
      for (const form of [value, value.toLowerCase()]) {
        assert.equal(raw.includes(Buffer.from(form, 'utf8')), false, `${what} found in plaintext`);
      }
    }
    assert.equal(raw.includes(Buffer.from('quxworth')), false, 'no normalized prefix in clear either');
  });

  it('still finds them by search (blinded index)', async () => {
    const q = async (qs: string, type = 'Patient') => (await request(app).get(`/fhir/${type}?${qs}`)).body;
    assert.equal((await q(`family=${SECRET.family}`)).entry?.[0]?.resource.id, patientId);
    assert.equal((await q('family=quxwor')).entry?.[0]?.resource.id, patientId, 'prefix search on a blinded name');
    assert.equal((await q(`name:exact=${SECRET.family}`)).entry?.length, 1);
    assert.equal((await q('name:exact=quxworthington')).entry, undefined, ':exact is case-sensitive');
    assert.equal((await q(`identifier=http://hospital.example/mrn|${SECRET.mrn}`)).entry?.length, 1);
    assert.equal((await q(`phone=${encodeURIComponent(SECRET.phone)}`)).entry?.length, 1);
    assert.equal((await q(`address-city=${SECRET.city}`)).entry?.length, 1);
    assert.equal((await q('birthdate=1961-07-19')).entry?.length, 1);
    assert.equal((await q(`value-string=${encodeURIComponent('trace of glyph')}`, 'Observation')).entry?.length, 1);
    assert.equal((await q('family=Smith')).entry, undefined);
  });

  it('refuses what a blinded index cannot do, with a clear OperationOutcome', async () => {
    const c = await request(app).get('/fhir/Patient?family:contains=worth');
    assert.equal(c.status, 400);
    assert.match(JSON.stringify(c.body), /blind/i);
    const s = await request(app).get('/fhir/Patient?_sort=family');
    assert.equal(s.status, 400);
    assert.match(JSON.stringify(s.body), /blind/i);
  });
});
