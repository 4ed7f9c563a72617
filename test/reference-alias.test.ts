import assert from 'node:assert/strict';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import type { Resource } from '@medplum/fhirtypes';
import { loadDefinitions } from '../src/fhir/definitions.js';
import { parseSearch } from '../src/fhir/search/parse.js';
import { Blinder, SqliteStore } from '../src/store/index.js';
import { compileSearch } from '../src/store/sqlite/search-plan.js';
import { compiledIds } from './compiled-search.js';
import { referenceAliases } from '../src/store/reference-aliases.js';
import { tempDir } from './helpers.js';

/**
 * Observation.patient (subject.where(resolve() is Patient)) is stored as flags on the subject
 * rows; searches by either parameter must find exactly what separate rows would.
 */
describe('reference aliases (patient stored with subject)', () => {
  let store: SqliteStore;
  let file: string;
  const keys = { kek: randomBytes(32), indexKey: randomBytes(32) };
  const obs = (id: string, subject: Record<string, unknown> | undefined, performer?: string): Resource => ({
    resourceType: 'Observation', id, status: 'final', code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
    ...(subject ? { subject } : {}), ...(performer ? { performer: [{ reference: performer }] } : {}),
    effectiveDateTime: '2024-05-01T10:00:00Z',
  } as Resource);

  before(async () => {
    loadDefinitions();
    file = path.join(tempDir(), 'custos.db');
    store = SqliteStore.open({ file, keys });
    await store.transaction(async (tx) => {
      for (const id of ['p1', 'p2']) await tx.write({ resourceType: 'Patient', id, resource: { resourceType: 'Patient', id, name: [{ family: id === 'p1' ? 'Aliasone' : 'Aliastwo' }] } as Resource });
      await tx.write({ resourceType: 'Group', id: 'g1', resource: { resourceType: 'Group', id: 'g1', type: 'person', actual: true } as Resource });
      await tx.write({ resourceType: 'Observation', id: 'o-rel', resource: obs('o-rel', { reference: 'Patient/p1' }) });
      await tx.write({ resourceType: 'Observation', id: 'o-hist', resource: obs('o-hist', { reference: 'Patient/p1/_history/1' }) });
      await tx.write({ resourceType: 'Observation', id: 'o-group', resource: obs('o-group', { reference: 'Group/g1' }) });
      // An absolute URL: subject has a Patient-typed row, but resolve() is not Patient for it.
      await tx.write({ resourceType: 'Observation', id: 'o-abs', resource: obs('o-abs', { reference: 'http://elsewhere.example/fhir/Patient/p2' }) });
      await tx.write({ resourceType: 'Observation', id: 'o-perf', resource: obs('o-perf', undefined, 'Patient/p2') });
      await tx.write({ resourceType: 'Observation', id: 'o-none', resource: obs('o-none', undefined) });
      const condition = (id: string, subject: string, asserter: string): Resource => ({
        resourceType: 'Condition', id, subject: { reference: subject }, asserter: { reference: asserter },
      } as Resource);
      await tx.write({ resourceType: 'Condition', id: 'c1', resource: condition('c1', 'Patient/p1', 'Patient/p2') });
      await tx.write({ resourceType: 'Condition', id: 'c2', resource: condition('c2', 'Patient/p2', 'Practitioner/x') });
    });
  });
  after(async () => store.close());

  const ids = async (qs: string, compartment?: string) => {
    const parsed = parseSearch('Observation', [...new URLSearchParams(qs)], { strict: true, defaultCount: 100, maxCount: 100 });
    if (compartment) parsed.query.compartment = { resourceType: 'Patient', id: compartment, params: ['subject', 'performer'] };
    return (await store.search(parsed.query)).matches.map((m) => m.id).sort();
  };

  it('finds Observation.patient as an alias of subject, and nothing else is aliased there', () => {
    assert.deepEqual([...referenceAliases('Observation')], [['patient', ['subject']]]);
    assert.deepEqual([...referenceAliases('AuditEvent')], [['patient', ['agent', 'entity']]]);
  });

  it('keeps one row per reference to a Patient', () => {
    const db = new Database(file, { readonly: true });
    const rows = db.prepare("SELECT r.param, r.flags FROM idx_reference r JOIN resource_current c ON c.pk = r.res WHERE c.id = 'o-rel'").all();
    db.close();
    assert.deepEqual(rows, [{ param: 'subject', flags: 3 }]);
  });

  it('answers patient and subject searches as separate rows would', async () => {
    assert.deepEqual(await ids('patient=p1'), ['o-hist', 'o-rel']);
    assert.deepEqual(await ids('patient=Patient/p1'), ['o-hist', 'o-rel']);
    assert.deepEqual(await ids('subject=Patient/p1'), ['o-hist', 'o-rel']);
    assert.deepEqual(await ids('patient=p2'), []);
    assert.deepEqual(await ids('subject=Patient/p2'), ['o-abs']);
    assert.deepEqual(await ids('subject:Patient=p2'), ['o-abs']);
    assert.deepEqual(await ids('subject=Group/g1'), ['o-group']);
    assert.deepEqual(await ids('patient=Group/g1'), []);
    assert.deepEqual(await ids('patient:missing=true'), ['o-abs', 'o-group', 'o-none', 'o-perf']);
    assert.deepEqual(await ids('subject:missing=true'), ['o-none', 'o-perf']);
    assert.deepEqual(await ids('patient=p1&date=ge2024-05-01&date=lt2024-05-02'), ['o-hist', 'o-rel']);
    assert.deepEqual(await ids('patient.name=aliasone'), ['o-hist', 'o-rel']);
    assert.deepEqual(await ids('patient.name=aliastwo'), []);
    assert.deepEqual(await ids('subject:Patient.name=aliastwo'), ['o-abs']);
    assert.deepEqual(await ids('code=http://loinc.org|8867-4', 'p2'), ['o-abs', 'o-perf']);
    assert.deepEqual(await ids('code=http://loinc.org|8867-4', 'p1'), ['o-hist', 'o-rel']);
  });

  it('answers a compartment whose parameters mix an alias with a plain parameter (Condition: patient, asserter)', async () => {
    const inCompartment = async (patient: string) => {
      const parsed = parseSearch('Condition', [], { strict: true, defaultCount: 100, maxCount: 100 });
      parsed.query.compartment = { resourceType: 'Patient', id: patient, params: ['patient', 'asserter'] };
      return (await store.search(parsed.query)).matches.map((m) => m.id).sort();
    };
    assert.deepEqual(await inCompartment('p1'), ['c1']);
    assert.deepEqual(await inCompartment('p2'), ['c1', 'c2']);
  });

  it('includes and revincludes through the alias', async () => {
    const rel = await store.referencedBy(['Observation/o-rel', 'Observation/o-abs', 'Observation/o-group'], 'patient', undefined, 10);
    assert.deepEqual(rel.map((v) => `${v.resourceType}/${v.id}`), ['Patient/p1']);
    const subj = await store.referencedBy(['Observation/o-rel', 'Observation/o-group'], 'subject', undefined, 10);
    assert.deepEqual(subj.map((v) => `${v.resourceType}/${v.id}`).sort(), ['Group/g1', 'Patient/p1']);
    const rev = await store.referencing('Observation', 'patient', ['Patient/p1', 'Patient/p2'], 10);
    assert.deepEqual(rev.map((v) => v.id).sort(), ['o-hist', 'o-rel']);
    const any = await store.referencing('Observation', '*', ['Patient/p2'], 10);
    assert.deepEqual(any.map((v) => v.id).sort(), ['o-abs', 'o-perf']);
  });

  it('stores a union alias (AuditEvent.patient: agents and entities that are Patients) on its bases, one row per reference', async () => {
    const event = (id: string, agent: string, entities: string[]): Resource => ({
      resourceType: 'AuditEvent', id, type: { system: 'http://terminology.hl7.org/CodeSystem/audit-event-type', code: 'rest' }, recorded: '2026-11-28T10:00:00Z',
      agent: [{ who: { reference: agent }, requestor: true }], source: { observer: { display: 'x' } }, entity: entities.map((e) => ({ what: { reference: e } })),
    } as Resource);
    await store.transaction(async (tx) => {
      await tx.write({ resourceType: 'AuditEvent', id: 'ae1', resource: event('ae1', 'Patient/p2', ['Observation/o-rel', 'Patient/p1']) });
      await tx.write({ resourceType: 'AuditEvent', id: 'ae2', resource: event('ae2', 'Practitioner/x', ['Patient/p2']) });
    });
    const db = new Database(file, { readonly: true });
    const rows = db.prepare("SELECT r.param, r.target_id AS id, r.flags FROM idx_reference r JOIN resource_current c ON c.pk = r.res WHERE c.id = 'ae1' ORDER BY r.n").all();
    db.close();
    assert.deepEqual(rows, [{ param: 'agent', id: 'p2', flags: 3 }, { param: 'entity', id: 'o-rel', flags: 1 }, { param: 'entity', id: 'p1', flags: 3 }]);
    // The server keeps AuditEvents in the audit journal; written as ordinary resources (as here),
    // their union alias is searched by the generic compiler.
    const events = async (qs: string) => {
      const parsed = parseSearch('AuditEvent', [...new URLSearchParams(qs)], { strict: true, defaultCount: 100, maxCount: 100 });
      const c = compileSearch(parsed.query, new Blinder(keys.indexKey));
      const reader = new Database(file, { readonly: true });
      try {
        return compiledIds(reader, c, 1000).sort();
      } finally {
        reader.close();
      }
    };
    assert.deepEqual(await events('patient=p1'), ['ae1']);
    assert.deepEqual(await events('patient=Patient/p2'), ['ae1', 'ae2']);
    assert.deepEqual(await events('entity=Patient/p2'), ['ae2']);
    assert.deepEqual(await events('agent=Patient/p2'), ['ae1']);
    assert.deepEqual(await events('agent=Patient/p1'), []);
    assert.deepEqual(await events('patient=Practitioner/x'), []);
    assert.deepEqual(await events('patient.name=aliasone'), ['ae1']);
    assert.deepEqual(await events('patient=p1&entity:missing=false'), ['ae1']);
  });

  it('sorts by the alias', async () => {
    const parsed = parseSearch('Observation', [['_sort', 'patient'], ['_id', 'o-rel,o-group']], { strict: true, defaultCount: 100, maxCount: 100 });
    assert.deepEqual((await store.search(parsed.query)).matches.map((m) => m.id), ['o-rel', 'o-group']);
  });
});
