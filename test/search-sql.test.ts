import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import type { Resource } from '@medplum/fhirtypes';
import { loadDefinitions } from '../src/fhir/definitions.js';
import { FhirError } from '../src/fhir/outcome.js';
import { parseSearch } from '../src/fhir/search/parse.js';
import { Blinder } from '../src/store/blind.js';
import { createIndexer } from '../src/store/indexer.js';
import { IndexRowWriter } from '../src/store/sqlite/index-rows.js';
import { compileSearch } from '../src/store/sqlite/search-plan.js';
import { compiledIds } from './compiled-search.js';
import { SCHEMA } from '../src/store/sqlite/schema.js';
import type { SearchQuery } from '../src/store/types.js';
import { FIXTURES, HAS_FIXTURES, WITH_FIXTURES } from './helpers.js';

const FIX = FIXTURES.replace(/\/$/, '');
const blinder = new Blinder(Buffer.alloc(32, 9));
const db = new Database(':memory:');

function readDir(dir: string, prefixes: string[]): Resource[] {
  return readdirSync(dir)
    .filter((f) => prefixes.some((p) => f.startsWith(p)))
    .map((f) => JSON.parse(readFileSync(`${dir}/${f}`, 'utf8')) as Resource);
}

/** A Synthea bundle with its urn:uuid references rewritten to Type/id (what the server would store). */
function syntheaBundle(file: string): Resource[] {
  const text = readFileSync(`${FIX}/synthea/smart-generated-sample-data/${file}`, 'utf8');
  const bundle = JSON.parse(text) as { entry: { fullUrl: string; resource: Resource }[] };
  const map = new Map(bundle.entry.map((e) => [e.fullUrl, `${e.resource.resourceType}/${e.resource.id}`]));
  const rewritten = text.replace(/"urn:uuid:[0-9a-f-]+"/g, (m) => JSON.stringify(map.get(JSON.parse(m) as string) ?? JSON.parse(m)));
  return (JSON.parse(rewritten) as typeof bundle).entry.map((e) => e.resource);
}

function load(resources: Resource[]): void {
  const indexer = createIndexer(blinder);
  const insert = db.prepare('INSERT INTO resource_current (type, id, version, last_updated, deleted) VALUES (?, ?, 1, ?, 0)');
  const rows = new IndexRowWriter(db);
  db.transaction(() => {
    resources.forEach((r, i) => {
      const pk = insert.run(r.resourceType, r.id, Date.UTC(2024, 0, 1) + i * 1000).lastInsertRowid;
      const ix = indexer.extract(r);
      rows.insert(Number(pk), r.resourceType, ix);
    });
  })();
}

function runQuery(q: SearchQuery): string[] {
  const c = compileSearch(q, blinder, (sql, params) => db.prepare(sql).pluck().get(...params) as number);
  return compiledIds(db, c, q.count, q.offset);
}

function ids(type: string, qs: string): string[] {
  const parsed = parseSearch(type, [...new URLSearchParams(qs)], { strict: true, defaultCount: 1000, maxCount: 1000 });
  return runQuery(parsed.query);
}
/** Sorted ids, leaving out the Synthea resources (uuid ids) so expectations can name HL7 examples. */
const sorted = (type: string, qs: string) => hl7(ids(type, qs)).sort();
const hl7 = (xs: string[]) => xs.filter((x) => !/^[0-9a-f]{8}-[0-9a-f]{4}-/.test(x));

before(() => {
  if (!HAS_FIXTURES) return;
  loadDefinitions();
  db.exec(SCHEMA);
  const r4 = `${FIX}/hl7-examples/r4-core`;
  load([
    ...readDir(r4, ['Observation-', 'Patient-']),
    ...readDir(`${FIX}/hl7-examples/r4-core-referenced`, ['Practitioner-', 'Organization-', 'Encounter-']),
    ...syntheaBundle('Alberto_Atencio_fc712d1f-5a2e-4407-9c55-a2a2bad623c2.json'),
  ]);
});

describe('compiled search on fixtures', WITH_FIXTURES, () => {
  it('token: with and without system, no system, system only, :not, :missing', () => {
    assert.deepEqual(sorted('Observation', 'code=http://loinc.org|8302-2'), ['body-height', 'body-length']);
    assert.deepEqual(sorted('Observation', 'code=9269-2'), ['gcs-qa', 'glasgow']);
    assert.deepEqual(sorted('Observation', 'code=http://snomed.info/sct|9269-2'), []);
    assert.deepEqual(sorted('Observation', 'status=cancelled,entered-in-error'), ['blood-pressure-cancel', 'f202', 'unsat']);
    assert.deepEqual(sorted('Observation', 'code=|final'), []);
    assert.deepEqual(sorted('Observation', 'code=urn:iso:std:iso:11073:10101|'), ['656', 'satO2']);
    const all = ids('Observation', '').length;
    assert.equal(ids('Observation', 'status:not=final').length, all - ids('Observation', 'status=final').length);
    assert.ok(!ids('Observation', 'status:not=final').includes('example'));
    const missing = ids('Observation', 'subject:missing=true');
    assert.ok(missing.includes('decimal') && missing.includes('10minute-apgar-score') && !missing.includes('example'));
    assert.equal(ids('Observation', 'subject:missing=false').length, all - missing.length);
  });

  it('token :text on code displays and CodeableConcept text (blinded on Observation)', () => {
    assert.ok(ids('Observation', 'code:text=body weight').includes('example'));
    assert.ok(ids('Observation', 'code:text=BODY WEI').includes('example'));
    assert.ok(!ids('Observation', 'code:text=weight').includes('example'));
    // A union parameter reads its members' blinded rows; a chain reads the target's.
    assert.ok(ids('Observation', 'combo-code:text=body weight').includes('example'));
    assert.ok(ids('Observation', 'code:text=body weight').length > 0 && ids('Observation', 'code:text=zzz-no-such-text').length === 0);
  });

  it('blinded tokens: identifier and telecom', () => {
    assert.deepEqual(sorted('Patient', 'identifier=urn:oid:1.2.36.146.595.217.0.1|12345'), ['example']);
    assert.deepEqual(sorted('Patient', 'identifier=12345'), ['example', 'xcda']);
    assert.deepEqual(sorted('Patient', 'identifier=urn:oid:0.1.2.3.4.5.6.7|'), ['pat1', 'pat2', 'pat3', 'pat4']);
    assert.deepEqual(sorted('Patient', 'phone=(03) 5555 6473'), ['example']);
  });

  it('strings: blinded prefix, :exact, accents; clear prefix, :exact, :contains', () => {
    assert.deepEqual(sorted('Patient', 'family=chal'), ['example']);
    assert.deepEqual(sorted('Patient', 'name=WINDS'), ['example']);
    assert.deepEqual(sorted('Patient', 'family=Everywoman'), ['genetics-example1', 'mom']);
    assert.deepEqual(sorted('Patient', 'family:exact=Chalmers'), ['example']);
    assert.deepEqual(sorted('Patient', 'family:exact=chalmers'), []);
    assert.deepEqual(sorted('Patient', 'family=van de'), ['f001']);
    assert.deepEqual(sorted('Patient', 'address-city=pleasant'), ['example']);
    assert.deepEqual(sorted('Organization', 'name=health'), ['hl7']);
    assert.deepEqual(sorted('Organization', 'name:exact=Gastroenterology'), ['1']);
    assert.deepEqual(sorted('Organization', 'name:exact=gastroenterology'), []);
    assert.deepEqual(sorted('Organization', 'name:contains=UNIVERSITY'), ['f001', 'f201']);
    assert.deepEqual(sorted('Organization', 'name:contains=100%_'), []);
    assert.deepEqual(sorted('Practitioner', 'name=careful,voigt'), ['example', 'f002']);
  });

  it('the raw index never holds a Patient name or identifier in clear', () => {
    const dump = JSON.stringify(db.prepare('SELECT res, param, value, exact FROM idx_string UNION ALL SELECT res, param, system, code FROM idx_token').all()).toLowerCase();
    for (const secret of ['chalmers', 'everywoman', 'atencio', 'alberto', '444222222']) assert.ok(!dump.includes(secret), secret);
    assert.ok(dump.includes('gastroenterology'), 'organization names stay clear');
  });

  it('blinded birthdate by year, month and day', () => {
    assert.deepEqual(sorted('Patient', 'birthdate=1974-12-25'), ['ch-example', 'example']);
    assert.deepEqual(sorted('Patient', 'birthdate=1982'), ['pat3', 'pat4']);
    assert.deepEqual(sorted('Patient', 'birthdate=1982-08'), ['pat4']);
  });

  it('dates with every prefix against [lo, hi] ranges', () => {
    assert.deepEqual(sorted('Observation', 'date=2016-03-28'), ['example']);
    assert.deepEqual(sorted('Observation', 'date=eq2012'), ['blood-pressure', 'blood-pressure-cancel', 'blood-pressure-dar']);
    assert.deepEqual(sorted('Observation', 'date=2013-04-05'), ['f005']);
    // f002..f004 and unsat are periods reaching 2013-04-05; f001 is open-ended from 2013-04-02.
    assert.deepEqual(sorted('Observation', 'date=ne2013&date=lt2014&date=gt2012-12-31'), ['f001']);
    assert.deepEqual(sorted('Observation', 'date=sa2018-03-31&date=eb2019'), ['map-sitting'], 'abdo-tender is open-ended');
    assert.ok(ids('Observation', 'date=gt2018-04-03').includes('map-sitting'));
    assert.ok(!ids('Observation', 'date=sa2018-04-03').includes('map-sitting'));
    assert.ok(ids('Observation', 'date=gt2013-04-03').includes('f001'), 'open-ended period ends after');
    assert.ok(ids('Observation', 'date=lt2013-04-03').includes('f001'));
    assert.ok(!ids('Observation', 'date=eb2013-04-03').includes('f001'));
    const ge = ids('Observation', 'date=ge2018-03-11');
    const le = ids('Observation', 'date=le2018-03-11');
    assert.ok(ge.includes('bgpanel') && le.includes('bgpanel'), 'ge/le include the equal day');
    assert.ok(ge.includes('abdo-tender') && !le.includes('abdo-tender'));
    assert.ok(le.includes('example') && !ge.includes('example'));
    assert.ok(ids('Observation', 'date=ne2016-03-28').includes('eye-color'));
    assert.ok(!ids('Observation', 'date=ne2016-03-28').includes('example'));
    assert.ok(ids('Observation', 'date=ap2016-03-29').includes('example'));
    assert.ok(!ids('Observation', 'date=ap2016-03-29').includes('mbp'));
    assert.deepEqual(sorted('Observation', 'date=2017-05-03T19:54:26Z'), ['656']);
    assert.deepEqual(sorted('Observation', 'date=2017-05-03T15:54:26-04:00'), ['656']);
  });

  it('_lastUpdated and _id work on resource_current columns', () => {
    const all = ids('Observation', '_sort=_lastUpdated');
    const first = all[0]!;
    assert.deepEqual(ids('Observation', '_lastUpdated=lt2024-01-01T00:00:01Z'), [first]);
    assert.deepEqual(sorted('Observation', '_id=example,f001,nope'), ['example', 'f001']);
    assert.ok(!ids('Observation', '_id:not=example').includes('example'));
  });

  it('numbers and quantities with prefixes, implicit precision and units', () => {
    assert.deepEqual(sorted('Observation', 'value-quantity=185'), ['example']);
    assert.deepEqual(sorted('Observation', 'value-quantity=184.6'), []);
    assert.deepEqual(sorted('Observation', 'value-quantity=gt184.6&value-quantity=lt185.1'), ['example']);
    assert.deepEqual(sorted('Observation', 'value-quantity=16.2|http://unitsofmeasure.org|kg/m2'), ['bmi', 'bmi-using-related']);
    assert.deepEqual(sorted('Observation', 'value-quantity=16.2||kg/m2'), ['bmi', 'bmi-using-related']);
    assert.deepEqual(sorted('Observation', 'value-quantity=16.2|http://unitsofmeasure.org|cm'), []);
    assert.deepEqual(sorted('Observation', 'value-quantity=ge44||/min&value-quantity=le44||/min'), ['heart-rate']);
    assert.deepEqual(sorted('Observation', 'value-quantity=ap90||%'), ['satO2']);
    assert.deepEqual(sorted('Observation', 'value-quantity=ap0.887'), ['bmd']);
    assert.deepEqual(sorted('Observation', 'value-quantity=sa120||mmol/L'), []);
    assert.deepEqual(sorted('Observation', 'value-quantity=eb7||mmol/L'), ['f001']);
    assert.ok(ids('Observation', 'value-quantity=ne185').includes('bmi'));
    assert.ok(!ids('Observation', 'value-quantity=ne185').includes('example'));
    assert.deepEqual(sorted('Observation', 'component-value-quantity=107||mm[Hg]&component-value-quantity=60'), ['blood-pressure']);
  });

  it('references: Type/id, id with a type modifier, :identifier, absolute URL', () => {
    assert.ok(ids('Observation', 'subject=Patient/f001').includes('ekg'));
    assert.deepEqual(sorted('Observation', 'subject:Patient=f201'), ['f202', 'f203', 'f204', 'f205', 'f206']);
    assert.deepEqual(sorted('Observation', 'patient=f201'), ['f202', 'f203', 'f204', 'f205', 'f206']);
    assert.deepEqual(sorted('Observation', 'subject:Group=f201'), []);
    assert.deepEqual(sorted('Observation', 'subject=Group/herd1'), ['herd1']);
    assert.deepEqual(sorted('Observation', 'subject=http://example.org/fhir/Group/herd1'), ['herd1']);
    assert.deepEqual(sorted('Patient', 'organization=Organization/hl7'), ['genetics-example1', 'mom']);
    const withIdentifier = ids('Observation', 'subject:identifier=urn:mrn|M1');
    assert.deepEqual(withIdentifier, []);
  });

  it('chained parameters: subject:Patient.name and inferred targets', () => {
    assert.deepEqual(sorted('Observation', 'subject:Patient.name=bor'), ['f202', 'f203', 'f204', 'f205', 'f206']);
    assert.deepEqual(sorted('Observation', 'subject.family=Bor'), ['f202', 'f203', 'f204', 'f205', 'f206']);
    assert.deepEqual(sorted('Observation', 'subject:Patient.birthdate=1960-03-13'), ['f202', 'f203', 'f204', 'f205', 'f206']);
    assert.deepEqual(sorted('Patient', 'organization.name=health level'), ['genetics-example1', 'mom']);
    const alberto = ids('Observation', 'subject:Patient.family=atencio');
    assert.ok(alberto.length > 10);
    const [albertoId] = ids('Patient', 'given=alberto&family=atencio');
    const heights = ids('Observation', 'subject:Patient.family=atencio&code=http://loinc.org|8302-2');
    assert.ok(heights.length > 0);
    assert.deepEqual(heights, ids('Observation', `patient=${albertoId}&code=http://loinc.org|8302-2`));
  });

  it('compartment restricts to resources referencing the patient', () => {
    const q = parseSearch('Observation', [['code', 'http://loinc.org|55233-1']], { strict: true, defaultCount: 100, maxCount: 100 }).query;
    q.compartment = { resourceType: 'Patient', id: 'example', params: ['subject', 'performer'] };
    assert.deepEqual(runQuery(q).sort(), ['example-genetics-1', 'example-genetics-2']);
    q.compartment = { resourceType: 'Patient', id: '727127', params: ['subject', 'performer'] };
    assert.deepEqual(runQuery(q).sort(), ['example-haplotype1', 'example-haplotype2']);
  });

  it('_sort by params, descending, multi-key, missing last, and paging', () => {
    const byQty = hl7(ids('Observation', 'code=http://loinc.org|8302-2,http://loinc.org|8310-5,http://loinc.org|39156-5&_sort=-value-quantity'));
    assert.deepEqual(byQty.slice(0, 2), ['body-height', 'f202']);
    // bmi and heart-rate share a date: ties go by pk in the first rule's direction, so a
    // descending sort is the ascending one reversed (missing values last in both).
    assert.deepEqual(ids('Observation', '_id=bmi,example,heart-rate,decimal&_sort=-date'), ['example', 'heart-rate', 'bmi', 'decimal']);
    assert.deepEqual(ids('Observation', '_id=bmi,example,heart-rate,decimal&_sort=date'), ['bmi', 'heart-rate', 'example', 'decimal']);
    assert.deepEqual(ids('Observation', '_id=bmi,example,heart-rate,f202&_sort=status,-_id'), ['f202', 'heart-rate', 'example', 'bmi']);
    assert.deepEqual(ids('Organization', '_id=1,f001,f201,hl7&_sort=name&_count=2&_offset=1'), ['f001', '1']);
    assert.throws(() => ids('Patient', '_sort=name'), (e: unknown) => e instanceof FhirError && /blinded/.test(e.message));
  });
});
