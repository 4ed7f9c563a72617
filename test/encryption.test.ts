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
  // Free text of a diagnosis: CodeableConcept.text, Coding.display, a note (Annotation), narrative.
  conditionText: 'Bob Quendrith melancholia',
  display: 'Vorpalite wasting syndrome',
  conditionNote: 'Frabjous relapse after the funeral',
  conditionNarrative: 'Galumphing insomnia since March',
  observationNote: 'Mimsy borogove reading repeated',
  tagDisplay: 'Snarkhunt cohort',
};

/** Words of SECRET that must never appear in the clear (each distinctive on its own). */
const SECRET_WORDS = ['Quxworth', 'Zebediah', '77441', '0199-8731', 'Hollowbrook', 'Wexmoor', 'Blinkerton', 'glyphosate', 'xylophone',
  'Quendrith', 'melancholia', 'Vorpalite', 'Frabjous', 'funeral', 'Galumphing', 'insomnia', 'Mimsy', 'borogove', 'Snarkhunt'];

/** Every file under dir, recursively. */
function filesUnder(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? filesUnder(p) : e.isFile() ? [p] : [];
  });
}

/** The secrets (as written, lower- and upper-case) found in the raw bytes of these files. */
function clearSecrets(files: string[]): string[] {
  const found: string[] = [];
  for (const f of files) {
    const raw = fs.readFileSync(f);
    for (const [what, value] of Object.entries(SECRET)) {
      for (const form of [value, value.toLowerCase(), value.toUpperCase()]) {
        if (raw.includes(Buffer.from(form, 'utf8'))) found.push(`${what} in ${path.basename(f)}`);
      }
    }
    for (const word of SECRET_WORDS) {
      for (const form of [word, word.toLowerCase()]) {
        if (raw.includes(Buffer.from(form, 'utf8'))) found.push(`'${form}' in ${path.basename(f)}`);
      }
    }
  }
  return [...new Set(found)];
}

describe('encryption at rest', () => {
  let app: Express;
  let dataDir: string;
  let close: () => Promise<void>;
  let patientId: string;
  let conditionId: string;
  let observationId: string;

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
      note: [{ text: SECRET.observationNote }],
    }));
    assert.equal(o.status, 201);
    observationId = o.body.id;
    const c = await request(app).post('/fhir/Condition').set('Content-Type', FHIR_JSON).send(JSON.stringify({
      resourceType: 'Condition',
      meta: { tag: [{ system: 'urn:example:cohort', code: 'c7', display: SECRET.tagDisplay }] },
      text: { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml">${SECRET.conditionNarrative}</div>` },
      code: { coding: [{ system: 'http://example.org/dx', code: 'VW-12', display: SECRET.display }], text: SECRET.conditionText },
      subject: { reference: `Patient/${patientId}` },
      note: [{ text: SECRET.conditionNote }],
    }));
    assert.equal(c.status, 201);
    conditionId = c.body.id;
  });
  let closed = false;
  after(async () => { if (!closed) await close(); });

  it('creates a 0600 key file in DATA_DIR', () => {
    const st = fs.statSync(path.join(dataDir, 'keys', 'master.key'));
    assert.equal(st.mode & 0o777, 0o600);
  });

  it('keeps no plaintext of names, identifiers, phone, address, narrative, notes, code texts, displays or string values in the database or its WAL', () => {
    const files = fs.readdirSync(dataDir).filter((f) => f.startsWith('custos.db'));
    assert.ok(files.includes('custos.db'));
    assert.ok(files.includes('custos.db-wal'), 'the WAL is checked too');
    const raw = Buffer.concat(files.map((f) => fs.readFileSync(path.join(dataDir, f))));
    // Sanity: the scan does find plain values that are meant to be there (resource type names, codes).
    assert.ok(raw.includes(Buffer.from('Observation')));
    assert.ok(raw.includes(Buffer.from('VW-12')), 'codes stay clear');
    assert.deepEqual(clearSecrets(files.map((f) => path.join(dataDir, f))), []);
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

  it('finds a diagnosis by code:text (starts-with of the whole text or display, blinded), not by its inner words', async () => {
    const q = async (qs: string) => {
      const r = await request(app).get(`/fhir/Condition?${qs}`);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      return (r.body.entry ?? []).map((e: { resource: { id: string } }) => e.resource.id);
    };
    assert.deepEqual(await q(`code:text=${encodeURIComponent(SECRET.conditionText)}`), [conditionId]);
    assert.deepEqual(await q('code:text=bob%20QUEN'), [conditionId], 'case-insensitive prefix');
    assert.deepEqual(await q('code:text=vorpalite'), [conditionId], 'a Coding.display');
    assert.deepEqual(await q('_tag:text=snark'), [conditionId], 'a meta tag display');
    assert.deepEqual(await q('code:text=melancholia'), [], 'a word inside the text does not match');
    assert.deepEqual(await q(`patient=${patientId}&code:text=bob`), [conditionId]);
    // A union parameter (combo-code) and a chain read the blinded rows too.
    const obs = await request(app).get('/fhir/Observation?combo-code:text=lab%20no');
    assert.deepEqual(obs.body.entry?.map((e: { resource: { id: string } }) => e.resource.id), [observationId]);
    const r = await request(app).post('/fhir/DiagnosticReport').set('Content-Type', FHIR_JSON).send(JSON.stringify({
      resourceType: 'DiagnosticReport', status: 'final', code: { text: 'Panel' }, subject: { reference: `Patient/${patientId}` }, result: [{ reference: `Observation/${observationId}` }],
    }));
    assert.equal(r.status, 201);
    const chained = await request(app).get('/fhir/DiagnosticReport?result.code:text=LAB');
    assert.deepEqual(chained.body.entry?.map((e: { resource: { id: string } }) => e.resource.id), [r.body.id]);
    assert.equal((await request(app).get('/fhir/DiagnosticReport?result.code:text=note')).body.entry, undefined);
  });

  it('does not index narrative or notes: _content and _text are refused under strict handling', async () => {
    for (const p of ['_content', '_text']) {
      const r = await request(app).get(`/fhir/Condition?${p}=frabjous`).set('Prefer', 'handling=strict');
      assert.equal(r.status, 400);
      assert.equal(r.body.resourceType, 'OperationOutcome');
      assert.match(r.body.issue[0].diagnostics, /not indexed/);
    }
  });

  it('refuses what a blinded index cannot do, with a clear OperationOutcome', async () => {
    const c = await request(app).get('/fhir/Patient?family:contains=worth');
    assert.equal(c.status, 400);
    assert.match(JSON.stringify(c.body), /blind/i);
    const s = await request(app).get('/fhir/Patient?_sort=family');
    assert.equal(s.status, 400);
    assert.match(JSON.stringify(s.body), /blind/i);
  });

  it('after a checkpoint, no file under DATA_DIR holds any of them in the clear (searches included)', async () => {
    closed = true;
    await close();
    const files = filesUnder(dataDir);
    assert.ok(files.some((f) => path.basename(f) === 'custos.db'));
    assert.ok(files.some((f) => path.basename(f) === 'auth.db'), 'the authorization server database is scanned too');
    assert.equal(fs.existsSync(path.join(dataDir, 'custos.db-wal')) ? fs.statSync(path.join(dataDir, 'custos.db-wal')).size : 0, 0, 'checkpointed');
    assert.deepEqual(clearSecrets(files), []);
  });
});
