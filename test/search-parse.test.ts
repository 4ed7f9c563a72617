import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FhirError } from '../src/fhir/outcome.js';
import { parseSearch, type ParsedSearch } from '../src/fhir/search/parse.js';

const opts = { strict: false, defaultCount: 20, maxCount: 100 };
const parse = (type: string, qs: string, o = opts): ParsedSearch => parseSearch(type, [...new URLSearchParams(qs)], o);

function rejects(type: string, qs: string, status: number, pattern: RegExp, o = opts): void {
  assert.throws(() => parse(type, qs, o), (e: unknown) => {
    assert.ok(e instanceof FhirError, String(e));
    assert.equal(e.status, status);
    assert.match(e.message, pattern);
    return true;
  });
}

describe('parseSearch', () => {
  it('parses token, string, reference and defaults', () => {
    const p = parse('Observation', 'code=http://loinc.org|8867-4,|x&status=final&subject=Patient/1');
    assert.deepEqual(p.query.filters, [
      { param: 'code', type: 'token', values: [{ prefix: 'eq', value: 'http://loinc.org|8867-4' }, { prefix: 'eq', value: '|x' }], blinded: false },
      { param: 'status', type: 'token', values: [{ prefix: 'eq', value: 'final' }], blinded: false },
      { param: 'subject', type: 'reference', values: [{ prefix: 'eq', value: 'Patient/1' }], blinded: false },
    ]);
    assert.equal(p.query.count, 20);
    assert.equal(p.query.offset, 0);
    assert.equal(p.query.total, 'accurate');
    assert.deepEqual(p.unknown, []);
  });

  it('parses prefixes on date, number and quantity but not on strings', () => {
    const p = parse('Observation', 'date=ge2020-01-01&date=lt2021&value-quantity=ap5.4|http://unitsofmeasure.org|mg,le-3&value-string=eq1');
    assert.deepEqual(p.query.filters[0]!.values, [{ prefix: 'ge', value: '2020-01-01' }]);
    assert.deepEqual(p.query.filters[1]!.values, [{ prefix: 'lt', value: '2021' }]);
    assert.deepEqual(p.query.filters[2]!.values, [{ prefix: 'ap', value: '5.4|http://unitsofmeasure.org|mg' }, { prefix: 'le', value: '-3' }]);
    assert.deepEqual(p.query.filters[3]!.values, [{ prefix: 'eq', value: 'eq1' }]);
    assert.equal(p.query.filters[3]!.blinded, true);
  });

  it('splits on unescaped commas only', () => {
    const p = parse('Organization', 'name=a\\,b,c');
    assert.deepEqual(p.query.filters[0]!.values.map((v) => v.value), ['a,b', 'c']);
  });

  it('parses modifiers and sets blinding per modifier', () => {
    const p = parse('Observation', 'code:not=x&code:text=weight&subject:Patient=1&subject:identifier=urn:mrn|7&value-quantity:missing=true');
    assert.deepEqual(p.query.filters.map((f) => [f.param, f.modifier, f.blinded]), [
      ['code', 'not', false],
      ['code', 'text', true],
      ['subject', 'Patient', false],
      ['subject', 'identifier', true],
      ['value-quantity', 'missing', false],
    ]);
    // :text reads the displays: blinded on patient data (Observation) although its codes are clear.
    assert.equal(parse('Organization', 'type:text=hosp').query.filters[0]!.blinded, false);
    assert.equal(parse('Condition', '_tag:text=x').query.filters[0]!.blinded, true);
    assert.equal(parse('Medication', 'code:text=aspirin').query.filters[0]!.blinded, false);
  });

  it('parses _id, _lastUpdated and control parameters', () => {
    const p = parse('Patient', '_id=a,b&_lastUpdated=gt2020-01-01T00:00:00Z&_count=500&_offset=40&_total=none&_summary=count&_elements=id,name&_format=json&_pretty=true');
    assert.deepEqual(p.query.filters, [
      { param: '_id', type: 'token', values: [{ prefix: 'eq', value: 'a' }, { prefix: 'eq', value: 'b' }], blinded: false },
      { param: '_lastUpdated', type: 'date', values: [{ prefix: 'gt', value: '2020-01-01T00:00:00Z' }], blinded: false },
    ]);
    assert.equal(p.query.count, 100);
    assert.equal(p.query.offset, 40);
    assert.equal(p.query.total, 'none');
    assert.equal(p.summary, 'count');
    assert.deepEqual(p.elements, ['id', 'name']);
    assert.equal(parse('Patient', '_count=0').query.count, 0);
  });

  it('parses _sort and refuses blinded or unknown sort keys', () => {
    assert.deepEqual(parse('Observation', '_sort=-date,code,_id').query.sort, [
      { code: 'date', descending: true }, { code: 'code', descending: false }, { code: '_id', descending: false },
    ]);
    rejects('Patient', '_sort=family', 400, /family.*blinded/);
    rejects('Patient', '_sort=birthdate', 400, /blinded/);
    rejects('Patient', '_sort=nope', 400, /nope/);
  });

  it('parses _include and _revinclude', () => {
    const p = parse('Observation', '_include=Observation:subject:Patient&_include:iterate=Observation:performer&_revinclude=Provenance:target&_include=*');
    assert.deepEqual(p.include, [
      { sourceType: 'Observation', param: 'subject', targetType: 'Patient', iterate: false },
      { sourceType: 'Observation', param: 'performer', iterate: true },
      { sourceType: 'Observation', param: '*', iterate: false },
    ]);
    assert.deepEqual(p.revinclude, [{ sourceType: 'Provenance', param: 'target', iterate: false }]);
    rejects('Observation', '_include=Observation:status', 400, /not a reference/);
    rejects('Observation', '_include=Patient:organization', 400, /searched type/);
  });

  it('parses one-level chains with explicit or inferred target types', () => {
    const p = parse('Observation', 'subject:Patient.name=peter&subject.name=x');
    const [typed, inferred] = p.query.filters;
    assert.deepEqual(typed!.chain, { targetTypes: ['Patient'], filter: { param: 'name', type: 'string', values: [{ prefix: 'eq', value: 'peter' }], blinded: true } });
    assert.deepEqual([...inferred!.chain!.targetTypes].sort(), ['Location', 'Patient']);
    assert.equal(inferred!.chain!.filter.blinded, true);
    rejects('Observation', 'subject.name.family=x', 400, /one level/);
    rejects('Observation', 'subject.nope=x', 400, /nope/);
    rejects('Observation', 'status.name=x', 400, /not a reference/);
  });

  it('rejects bad values with a diagnostic naming the parameter', () => {
    rejects('Observation', 'date=2020-13-01', 400, /'date'.*invalid date/);
    rejects('Observation', 'date=xx2020', 400, /Unknown prefix 'xx'.*'date'/);
    rejects('Observation', 'value-quantity=abc', 400, /'value-quantity'.*invalid quantity/);
    rejects('RiskAssessment', 'probability=1.2.3', 400, /'probability'.*invalid number/);
    rejects('Observation', 'code:exact=x', 400, /Unknown modifier ':exact' on parameter 'code'/);
    rejects('Observation', 'code:in=http://vs', 400, /':in'.*not supported/);
    rejects('Observation', '_count=abc', 400, /_count/);
    rejects('Observation', '_count=-1', 400, /_count/);
    rejects('Observation', 'status:missing=maybe', 400, /missing/);
    rejects('Observation', '_total=all', 400, /_total/);
  });

  it('refuses what blinding rules out', () => {
    rejects('Patient', 'name:contains=ali', 400, /'name' is blinded.*:contains/);
    rejects('Patient', 'birthdate=ge1970', 400, /'birthdate' is blinded.*equality/);
    rejects('Patient', 'birthdate=1970-01-01T10:00', 400, /'birthdate' is blinded/);
    const p = parse('Patient', 'birthdate=1974-12&name:exact=Chalmers&organization.name:contains=gastro');
    assert.deepEqual(p.query.filters.map((f) => f.blinded), [true, true, false]);
    assert.doesNotThrow(() => parse('Organization', 'name:contains=clin'));
  });

  it('reports unknown and unsupported parameters, or rejects them when strict', () => {
    const p = parse('Observation', 'foo=1&_has:Observation:patient:code=x&code-value-quantity=a$b&_compartment=Patient/1&status=final');
    assert.deepEqual(p.unknown, ['foo', '_has:Observation:patient:code', 'code-value-quantity', '_compartment']);
    assert.equal(p.query.filters.length, 1);
    const strict = { ...opts, strict: true };
    rejects('Observation', 'foo=1', 400, /Unknown search parameter 'foo'/, strict);
    rejects('Observation', '_has:Observation:patient:code=x', 400, /'_has' is not supported/, strict);
    rejects('Observation', 'code-value-quantity=a$b', 400, /composite.*not supported/, strict);
  });
});
