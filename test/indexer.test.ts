import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import type { Resource } from '@medplum/fhirtypes';
import { loadDefinitions } from '../src/fhir/definitions.js';
import { Blinder, normalizeString } from '../src/store/blind.js';
import { isBlinded, isParamBlinded } from '../src/store/blinding-policy.js';
import { createIndexer, expressionRoots, MAX_TIME, numberRange, parseDateRange, parseReference } from '../src/store/indexer.js';
import { FIXTURES, WITH_FIXTURES } from './helpers.js';

const R4 = `${FIXTURES}/hl7-examples/r4-core`;
const fixture = (name: string): Resource => JSON.parse(readFileSync(`${R4}/${name}.json`, 'utf8')) as Resource;

loadDefinitions();
const blinder = new Blinder(Buffer.alloc(32, 1));
const indexer = createIndexer(blinder);
const iso = (ms: number) => new Date(ms).toISOString();

describe('blind', () => {
  it('normalizes accents, case and whitespace', () => {
    assert.equal(normalizeString('  Marché   DU\tPont '), 'marche du pont');
    assert.equal(normalizeString('Ærø Ünïcödé'), 'ærø unicode');
  });
  it('keys MACs per parameter and kind', () => {
    assert.notEqual(blinder.token('identifier', '123'), blinder.token('phone', '123'));
    assert.match(blinder.prefix('name', 'abc'), /^p:[\w-]{43}$/);
    assert.match(blinder.exact('name', 'abc'), /^x:[\w-]{43}$/);
    assert.notEqual(blinder.prefix('name', 'abc').slice(2), blinder.exact('name', 'abc').slice(2));
    assert.notEqual(new Blinder(Buffer.alloc(32, 2)).token('identifier', '123'), blinder.token('identifier', '123'));
  });
  it('caps prefix rows at 64 code points', () => {
    const long = 'a'.repeat(100);
    const values = blinder.stringValues('name', long);
    assert.equal(values.length, 65);
    assert.equal(values[63], blinder.prefix('name', 'a'.repeat(64)));
    assert.equal(values[64], blinder.exact('name', long));
  });
});

describe('value parsing', () => {
  it('parses date ranges at their precision', () => {
    assert.deepEqual(parseDateRange('2020')!.map(iso), ['2020-01-01T00:00:00.000Z', '2020-12-31T23:59:59.999Z']);
    assert.deepEqual(parseDateRange('2020-02')!.map(iso), ['2020-02-01T00:00:00.000Z', '2020-02-29T23:59:59.999Z']);
    assert.deepEqual(parseDateRange('2021-03-04')!.map(iso), ['2021-03-04T00:00:00.000Z', '2021-03-04T23:59:59.999Z']);
    assert.deepEqual(parseDateRange('2013-04-02T09:30:10+01:00')!.map(iso), ['2013-04-02T08:30:10.000Z', '2013-04-02T08:30:10.999Z']);
    assert.deepEqual(parseDateRange('2013-04-02T09:30')!.map(iso), ['2013-04-02T09:30:00.000Z', '2013-04-02T09:30:59.999Z']);
    assert.deepEqual(parseDateRange('2013-04-02T09:30:10.5Z')!.map(iso), ['2013-04-02T09:30:10.500Z', '2013-04-02T09:30:10.599Z']);
    assert.equal(parseDateRange('0050-01-01')![0], Date.parse('0050-01-01T00:00:00Z'));
    for (const bad of ['2020-13', '2021-02-29', '20200101', 'today', '2020-01-01T25:00']) assert.equal(parseDateRange(bad), undefined, bad);
  });
  it('gives numbers their implicit precision', () => {
    const r = numberRange('1.5')!;
    assert.ok(Math.abs(r.lo - 1.45) < 1e-12 && Math.abs(r.hi - 1.55) < 1e-12);
    assert.deepEqual(numberRange('100'), { value: 100, lo: 99.5, hi: 100.5 });
    assert.deepEqual(numberRange('1e2'), { value: 100, lo: 50, hi: 150 });
    assert.equal(numberRange('abc'), undefined);
  });
  it('splits references', () => {
    assert.deepEqual(parseReference('Patient/123/_history/2'), { targetType: 'Patient', targetId: '123', url: null });
    assert.deepEqual(parseReference('http://x.org/fhir/Patient/9'), { targetType: 'Patient', targetId: '9', url: 'http://x.org/fhir/Patient/9' });
    assert.deepEqual(parseReference('urn:uuid:abc'), { targetType: null, targetId: null, url: 'urn:uuid:abc' });
    assert.equal(parseReference('#contained'), undefined);
  });
  it('skips only expressions that cannot yield values from absent elements', () => {
    assert.deepEqual(expressionRoots('((Observation.value as Quantity) | Observation.component.value)', 'Observation'), ['value', 'component']);
    assert.deepEqual(expressionRoots("Patient.telecom.where((system = 'phone'))", 'Patient'), ['telecom']);
    assert.equal(expressionRoots('(Patient.deceased.exists() and (Patient.deceased != false))', 'Patient'), null);
    assert.equal(expressionRoots('Observation', 'Observation'), null);
  });
});

describe('blinding policy', () => {
  it('blinds person strings, identifiers, telecom and birth dates only', () => {
    assert.equal(isParamBlinded('Patient', 'name'), true);
    assert.equal(isParamBlinded('Observation', 'value-string'), true);
    assert.equal(isParamBlinded('Organization', 'name'), false);
    assert.equal(isParamBlinded('Location', 'address'), false);
    assert.equal(isParamBlinded('Observation', 'identifier'), true);
    assert.equal(isParamBlinded('Organization', 'identifier'), true);
    assert.equal(isParamBlinded('Practitioner', 'phone'), true);
    assert.equal(isParamBlinded('Observation', 'code'), false);
    assert.equal(isParamBlinded('Patient', 'birthdate'), true);
    assert.equal(isParamBlinded('Patient', 'death-date'), false);
    assert.equal(isParamBlinded('Observation', 'date'), false);
    assert.equal(isBlinded('Person', 'birthdate', 'date', { elementTypes: ['date'], elementPaths: ['Person.birthDate'] }), true);
  });
});

describe('indexer', WITH_FIXTURES, () => {
  it('indexes an Observation: codes, quantity, date, references', () => {
    const rows = indexer.extract(fixture('Observation-example'));
    assert.ok(rows.token.some((t) => t.param === 'code' && t.system === 'http://loinc.org' && t.code === '29463-7'));
    assert.ok(rows.token.some((t) => t.param === 'status' && t.system === null && t.code === 'final'));
    assert.deepEqual(rows.quantity.filter((q) => q.param === 'value-quantity'), [
      { param: 'value-quantity', system: 'http://unitsofmeasure.org', code: '[lb_av]', unit: 'lbs', value: 185, lo: 184.5, hi: 185.5 },
    ]);
    assert.deepEqual(rows.date.map((d) => [d.param, iso(d.lo), iso(d.hi)]), [['date', '2016-03-28T00:00:00.000Z', '2016-03-28T23:59:59.999Z']]);
    assert.deepEqual(rows.reference.filter((r) => r.param === 'subject'), [{ param: 'subject', targetType: 'Patient', targetId: 'example', url: null }]);
    assert.ok(rows.reference.some((r) => r.param === 'patient' && r.targetId === 'example'));
    // The code is clear, its display and text (free text on patient data) blinded: one row per
    // distinct text, its prefixes beside it (stored once per text, not per resource).
    // Displays 'Body Weight', 'Body weight Measured', 'Body weight', 'Body Weight': two texts.
    const text = rows.string.filter((s) => s.param === 'code:text');
    assert.deepEqual(text.map((s) => s.value).sort(), [blinder.text('Body Weight')!.value, blinder.text('body weight measured')!.value].sort());
    assert.ok(text.every((s) => s.exact === null));
    assert.ok(rows.texts?.some((t) => t.value === blinder.text('body weight')!.value && t.prefixes.includes(blinder.textPrefix('BODY WE'))));
  });

  it('blinds the :text rows of every token on patient data (displays, CodeableConcept.text, meta tags) and keeps them clear elsewhere', () => {
    const cond = indexer.extract({
      resourceType: 'Condition', subject: { reference: 'Patient/p1' },
      code: { coding: [{ system: 'http://snomed.info/sct', code: '35489007', display: 'Depressive disorder' }], text: 'Bob depression' },
      meta: { tag: [{ system: 'urn:t', code: 'x', display: 'Tagged by Zork' }] },
    } as Resource);
    assert.ok(cond.token.some((t) => t.param === 'code' && t.code === '35489007'), 'codes stay clear');
    const strings = JSON.stringify([cond.string, cond.texts]).toLowerCase();
    for (const word of ['depress', 'bob', 'zork']) assert.ok(!strings.includes(word), `${word} in the clear`);
    assert.deepEqual(cond.string.filter((s) => s.param.endsWith(':text')).map((s) => [s.param, s.value, s.exact]).sort(), [
      ['code:text', blinder.text('depressive disorder')!.value, null],
      ['code:text', blinder.text('BOB  Depression')!.value, null],
      ['_tag:text', blinder.text('Tagged by Zork')!.value, null],
    ].sort());
    assert.equal(cond.texts?.length, 3);
    assert.equal(blinder.text('Bob depression')!.prefixes.length, 'bob depression'.length);
    // A Medication is not patient data: its code text stays one clear normalized row.
    const med = indexer.extract({ resourceType: 'Medication', code: { text: 'Aspirin 100 mg' } } as Resource);
    assert.deepEqual(med.string.filter((s) => s.param === 'code:text'), [{ param: 'code:text', value: 'aspirin 100 mg', exact: 'Aspirin 100 mg' }]);
  });

  it('indexes a Period with no end as open-ended and skips contained references', () => {
    const rows = indexer.extract(fixture('Observation-f001'));
    const d = rows.date.find((r) => r.param === 'date')!;
    assert.equal(iso(d.lo), '2013-04-02T08:30:10.000Z');
    assert.equal(d.hi, MAX_TIME);
    const apgar = indexer.extract(fixture('Observation-1minute-apgar-score'));
    assert.equal(apgar.reference.filter((r) => r.param === 'subject').length, 0);
  });

  it('blinds a Patient: names, identifiers, telecom and birth date never appear in clear', () => {
    const patient = fixture('Patient-example');
    const rows = indexer.extract(patient);
    const text = JSON.stringify(rows).toLowerCase();
    for (const secret of ['chalmers', 'windsor', 'peter', '12345', '5555 6473', '1974', 'erewhon', 'pleasantville']) assert.ok(!text.includes(secret), secret);
    const family = rows.string.filter((s) => s.param === 'family').map((s) => s.value);
    for (const p of ['c', 'ch', 'chalmers', 'w', 'windsor']) assert.ok(family.includes(blinder.prefix('family', p)), p);
    assert.ok(family.includes(blinder.exact('family', 'Chalmers')));
    assert.ok(rows.string.every((s) => s.exact === null));
    assert.ok(rows.token.some((t) => t.param === 'identifier' && t.system === 'urn:oid:1.2.36.146.595.217.0.1' && t.code === blinder.token('identifier', '12345')));
    assert.ok(rows.token.some((t) => t.param === 'phone' && t.system === null && t.code === blinder.token('phone', '(03) 5555 6473')));
    assert.equal(rows.date.filter((d) => d.param === 'birthdate').length, 0);
    const birth = rows.string.filter((s) => s.param === 'birthdate').map((s) => s.value).sort();
    assert.deepEqual(birth, ['1974', '1974-12', '1974-12-25'].map((v) => blinder.exact('birthdate', v)).sort());
    assert.ok(rows.token.some((t) => t.param === 'gender' && t.code === 'male'));
    assert.ok(rows.token.some((t) => t.param === 'deceased' && t.code === 'false'));
    assert.ok(rows.reference.some((r) => r.param === 'organization' && r.targetType === 'Organization' && r.targetId === '1'));
  });

  it('keeps Organization names clear, normalized, with the exact form', () => {
    const org = { resourceType: 'Organization', id: 'o1', name: 'Clinique du Marché', identifier: [{ system: 'urn:org', value: '555' }] } as Resource;
    const rows = indexer.extract(org);
    assert.deepEqual(rows.string.filter((s) => s.param === 'name'), [{ param: 'name', value: 'clinique du marche', exact: 'Clinique du Marché' }]);
    assert.deepEqual(rows.token.filter((t) => t.param === 'identifier'), [{ param: 'identifier', system: 'urn:org', code: blinder.token('identifier', '555') }]);
  });

  it('indexes reference identifiers blinded and versioned references by type/id', () => {
    const obs = {
      resourceType: 'Observation', id: 'x', status: 'final', code: { text: 'x' },
      subject: { identifier: { system: 'urn:mrn', value: 'M1' } },
      performer: [{ reference: 'Practitioner/p1/_history/3' }, { reference: 'https://other.org/fhir/Practitioner/p2' }],
    } as Resource;
    const rows = indexer.extract(obs);
    assert.equal(rows.reference.filter((r) => r.param === 'subject').length, 0);
    assert.deepEqual(rows.token.filter((t) => t.param === 'subject:identifier'), [{ param: 'subject:identifier', system: 'urn:mrn', code: blinder.token('subject:identifier', 'M1') }]);
    assert.deepEqual(rows.reference.filter((r) => r.param === 'performer'), [
      { param: 'performer', targetType: 'Practitioner', targetId: 'p1', url: null },
      { param: 'performer', targetType: 'Practitioner', targetId: 'p2', url: 'https://other.org/fhir/Practitioner/p2' },
    ]);
  });

  it('dedupes identical rows', () => {
    const rows = indexer.extract({ resourceType: 'Observation', status: 'final', code: { coding: [{ system: 's', code: 'c' }, { system: 's', code: 'c' }] } } as Resource);
    assert.equal(rows.token.filter((t) => t.param === 'code').length, 1);
  });

  it('stores no rows for union parameters (combo-*), whose members hold them', () => {
    const rows = indexer.extract({
      resourceType: 'Observation', status: 'final', code: { coding: [{ system: 'http://loinc.org', code: '85354-9' }] },
      component: [{ code: { coding: [{ system: 'http://loinc.org', code: '8480-6' }] }, valueQuantity: { value: 120 } }],
    } as Resource);
    assert.deepEqual(rows.token.filter((t) => t.param.startsWith('combo-')), []);
    assert.deepEqual(rows.quantity.filter((q) => q.param.startsWith('combo-')), []);
    assert.ok(rows.token.some((t) => t.param === 'component-code' && t.code === '8480-6'));
    assert.ok(rows.quantity.some((q) => q.param === 'component-value-quantity' && q.value === 120));
  });
});
