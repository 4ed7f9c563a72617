import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import type { Resource } from '@medplum/fhirtypes';
import { buildAuditEvent, type AuditFacts } from '../src/audit/audit-event.js';
import { getTypeSearchParameters, loadDefinitions } from '../src/fhir/definitions.js';
import { Blinder } from '../src/store/blind.js';
import { compileDirectPaths, evalDirectPaths } from '../src/store/direct-paths.js';
import { createIndexer } from '../src/store/indexer.js';
import { getSearchParameterDetails } from '@medplum/core';
import { FIXTURES, WITH_FIXTURES } from './helpers.js';

loadDefinitions();
const blinder = new Blinder(Buffer.alloc(32, 7));
const fast = createIndexer(blinder);
const fhirPath = createIndexer(blinder, { fhirPathOnly: true });

/** Every resource in the shared fixtures: plain files, Bundle entries (also nested) and NDJSON lines. */
function fixtureResources(): Resource[] {
  const out: Resource[] = [];
  const add = (r: Resource | undefined) => {
    if (!r?.resourceType) return;
    out.push(r);
    if (r.resourceType === 'Bundle') for (const e of r.entry ?? []) add(e.resource);
  };
  const walk = (dir: string) => {
    for (const name of fs.readdirSync(dir)) {
      const file = path.join(dir, name);
      if (fs.statSync(file).isDirectory()) walk(file);
      else if (name.endsWith('.ndjson')) for (const line of fs.readFileSync(file, 'utf8').split('\n')) { if (line.trim()) add(JSON.parse(line)); }
      else if (name.endsWith('.json')) add(JSON.parse(fs.readFileSync(file, 'utf8')));
    }
  };
  walk(FIXTURES);
  return out;
}

const expr = (type: string, code: string) => getSearchParameterDetails(type, getTypeSearchParameters(type)[code]!).parsedExpression.toString();

describe('direct paths (index extraction without FHIRPath)', () => {
  it('compiles plain paths, unions, choice casts and target-type filters, and leaves the rest to FHIRPath', () => {
    assert.deepEqual(compileDirectPaths('Observation', expr('Observation', 'code')), [{ steps: ['code'], type: 'CodeableConcept' }]);
    assert.deepEqual(compileDirectPaths('Observation', expr('Observation', 'combo-code')), [
      { steps: ['code'], type: 'CodeableConcept' }, { steps: ['component', 'code'], type: 'CodeableConcept' },
    ]);
    assert.deepEqual(compileDirectPaths('Observation', expr('Observation', 'value-quantity')), [
      { steps: ['valueQuantity'], type: 'Quantity' }, { steps: ['valueSampledData'], type: 'SampledData' },
    ]);
    assert.deepEqual(compileDirectPaths('Patient', expr('Patient', 'given')), [{ steps: ['name', 'given'], type: 'string' }]);
    assert.deepEqual(compileDirectPaths('AuditEvent', expr('AuditEvent', 'agent')), [{ steps: ['agent', 'who'], type: 'Reference' }]);
    assert.deepEqual(compileDirectPaths('Observation', expr('Observation', 'patient')), [{ steps: ['subject'], type: 'Reference', resolveIs: 'Patient' }]);
    assert.deepEqual(compileDirectPaths('AuditEvent', expr('AuditEvent', 'patient')), [
      { steps: ['agent', 'who'], type: 'Reference', resolveIs: 'Patient' }, { steps: ['entity', 'what'], type: 'Reference', resolveIs: 'Patient' },
    ]);
    // Other where() criteria, functions, a choice without a cast, a cast followed by a path: FHIRPath.
    assert.equal(compileDirectPaths('Patient', expr('Patient', 'email')), null);
    assert.equal(compileDirectPaths('Patient', expr('Patient', 'phone')), null);
    assert.equal(compileDirectPaths('Patient', expr('Patient', 'deceased')), null);
    assert.equal(compileDirectPaths('Observation', expr('Observation', 'date')), null);
    assert.equal(compileDirectPaths('Observation', expr('Observation', 'value-string')), null);
  });

  it('walks arrays and skips absent and null elements', () => {
    const paths = compileDirectPaths('Patient', expr('Patient', 'given'))!;
    const values = evalDirectPaths(paths, { resourceType: 'Patient', name: [{ given: ['Ann', null, 'Bo'] }, {}, { given: ['Cy'] }] });
    assert.deepEqual(values, [{ type: 'string', value: 'Ann' }, { type: 'string', value: 'Bo' }, { type: 'string', value: 'Cy' }]);
  });

  it('gives exactly the index rows of the FHIRPath engine for every fixture resource', WITH_FIXTURES, () => {
    const resources = fixtureResources();
    assert.ok(resources.length > 1000, `only ${resources.length} fixture resources`);
    const types = new Set<string>();
    for (const r of resources) {
      types.add(r.resourceType);
      const direct = fast.extract(r);
      const engine = fhirPath.extract(r);
      if (`${r.resourceType}/${r.id}` !== 'Observation/decimal') {
        assert.deepEqual(direct, engine, `${r.resourceType}/${r.id}`);
        continue;
      }
      // The FHIRPath union drops component quantities it judges equal at their decimal precision
      // (1e-22 g and 1e-245 g); the direct walk keeps each, so a search for either finds it.
      assert.deepEqual({ ...direct, quantity: [] }, { ...engine, quantity: [] });
      const key = (q: object) => JSON.stringify(q);
      assert.ok(engine.quantity.every((q) => direct.quantity.some((d) => key(d) === key(q))));
      assert.deepEqual(direct.quantity.filter((d) => !engine.quantity.some((q) => key(q) === key(d))).map((q) => q.value), [1e-245]);
    }
    assert.ok(types.size > 20, `only ${types.size} resource types`);
  });

  it('filters references by target type exactly as FHIRPath resolve() does', () => {
    const subjects: unknown[] = [
      { reference: 'Patient/1' }, { reference: 'http://h/fhir/Patient/2' }, { reference: 'Patient?identifier=a|b' }, { reference: 'urn:uuid:0a1b' },
      { reference: '#contained' }, { reference: '' }, { type: 'Patient', identifier: { system: 's', value: 'v' } }, { type: 'Patient' },
      { display: 'only a name' }, { reference: 'Group/3' }, { reference: 'Patient' },
    ];
    for (const subject of subjects) {
      const obs = { resourceType: 'Observation', id: 'o', status: 'final', code: { text: 'x' }, subject } as Resource;
      assert.deepEqual(fast.extract(obs), fhirPath.extract(obs), JSON.stringify(subject));
    }
  });

  it('gives exactly the index rows of the FHIRPath engine for the AuditEvents the server writes', () => {
    const principals: AuditFacts['principal'][] = [
      { kind: 'token', clientId: 'app', subject: 'app', tokenId: 't', scope: '', scopes: [], fhirUser: 'http://h/fhir/Practitioner/p1' },
      { kind: 'token', clientId: 'backend', subject: 'backend', tokenId: 't', scope: '', scopes: [] },
      { kind: 'system', reason: 'test' },
      { kind: 'anonymous' },
    ];
    for (const principal of principals) {
      for (const interaction of ['read', 'search-type', 'create', 'login', 'token-grant', 'operation'] as const) {
        const facts: AuditFacts = {
          interaction, status: interaction === 'read' ? 404 : 200, principal, address: '::ffff:127.0.0.1', recorded: new Date(),
          resources: ['Observation/o1/_history/2', 'Patient/a'], patients: ['Patient/a', 'Patient/b'], breakGlass: interaction === 'read',
          ...(interaction === 'search-type' ? { query: 'code=x&_count=5', resourceType: 'Observation' } : {}),
          ...(interaction === 'operation' ? { operation: '$verify' } : {}),
        };
        const event = { ...buildAuditEvent(facts, { observer: 'http://h/fhir', seq: 3 }), id: 'e1' } as Resource;
        assert.deepEqual(fast.extract(event), fhirPath.extract(event), `${interaction} by ${principal.kind}`);
      }
    }
  });
});
