import assert from 'node:assert/strict';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import type { AuditEvent, Resource } from '@medplum/fhirtypes';
import { buildAuditEvent, type AuditFacts } from '../src/audit/index.js';
import { loadDefinitions } from '../src/fhir/definitions.js';
import { parseSearch } from '../src/fhir/search/parse.js';
import { Blinder, SqliteStore } from '../src/store/index.js';
import { AUDIT_JOURNAL_SCHEMA, AuditJournal, compileJournalWhere, journalEntry } from '../src/store/sqlite/audit-journal.js';
import { compileSearch } from '../src/store/sqlite/search-plan.js';
import { compiledIds } from './compiled-search.js';
import { tempDir } from './helpers.js';

/**
 * The audit journal answers AuditEvent searches from its own columns and keys; it must find
 * exactly what the generic store finds for the same AuditEvents and the same queries.
 */
describe('audit journal', () => {
  let store: SqliteStore;
  let generic: Database.Database;
  let db: Database.Database;
  let journal: AuditJournal;
  const keys = { kek: randomBytes(32), indexKey: randomBytes(32) };
  const blinder = new Blinder(keys.indexKey);
  const dataKey = { keyId: 1, key: randomBytes(32) };
  const events: AuditEvent[] = [];
  after(async () => { generic?.close(); await store?.close(); db?.close(); });

  before(async () => {
    loadDefinitions();
    const dir = tempDir();
    store = SqliteStore.open({ file: path.join(dir, 'generic.db'), keys });
    db = new Database(path.join(dir, 'journal.db'));
    db.exec(AUDIT_JOURNAL_SCHEMA);
    journal = new AuditJournal(db);
    const principals: AuditFacts['principal'][] = [
      { kind: 'token', clientId: 'app', subject: 'app', tokenId: 't', scope: '', scopes: [], fhirUser: 'http://h/fhir/Practitioner/doc1' },
      { kind: 'token', clientId: 'portal', subject: 'portal', tokenId: 't', scope: '', scopes: [], fhirUser: 'http://h/fhir/Patient/p1' },
      { kind: 'token', clientId: 'backend', subject: 'backend', tokenId: 't', scope: '', scopes: [] },
      { kind: 'anonymous' },
    ];
    const interactions = ['read', 'vread', 'search-type', 'create', 'update', 'delete', 'login', 'token-grant', 'operation'] as const;
    let seq = 0;
    const base = Date.parse('2026-11-20T08:00:00Z');
    for (let i = 0; i < 72; i++) {
      const interaction = interactions[i % interactions.length]!;
      const principal = principals[i % principals.length]!;
      const p = `Patient/p${i % 3}`;
      const facts: AuditFacts = {
        interaction, principal, status: [200, 201, 403, 404, 500][i % 5]!, address: '127.0.0.1', recorded: new Date(base + i * 3_600_000),
        resources: interaction === 'search-type' || interaction === 'login' ? [] : [`Observation/o${i % 7}/_history/1`],
        patients: interaction === 'search-type' ? [p, `Patient/p${(i + 1) % 3}`] : interaction === 'login' ? [] : [p],
        ...(interaction === 'search-type' ? { query: `code=x&subject=${p}`, resourceType: 'Observation' } : {}),
        ...(interaction === 'operation' ? { operation: '$verify' } : {}),
        ...(i % 11 === 0 ? { breakGlass: true } : {}),
      };
      if (interaction !== 'search-type' && interaction !== 'login') facts.owners = { [`Observation/o${i % 7}/_history/1`]: [p] };
      seq++;
      const lastUpdated = new Date(base + i * 3_600_000 + 500).toISOString();
      events.push({ ...buildAuditEvent(facts, { observer: 'http://h/fhir', seq }), id: String(seq), meta: { versionId: '1', lastUpdated } });
    }
    await store.transaction(async (tx) => {
      for (const e of events) await tx.write({ resourceType: 'AuditEvent', id: e.id!, resource: e as Resource });
    });
    // The generic store sets meta.lastUpdated itself: take its instants so _lastUpdated compares alike.
    generic = new Database(path.join(dir, 'generic.db'), { readonly: true });
    const stamps = new Map(generic.prepare("SELECT id, last_updated FROM resource_current WHERE type = 'AuditEvent'").all().map((r) => [(r as { id: string }).id, (r as { last_updated: number }).last_updated]));
    for (const e of events) e.meta = { versionId: '1', lastUpdated: new Date(stamps.get(e.id!)!).toISOString() };
    const entries = events.map((e) => journalEntry(e, blinder));
    db.transaction(() => {
      for (let i = 0; i < entries.length; i += 32) journal.append(entries.slice(i, i + 32), dataKey);
    })();
  });

  /** The generic search engine's answer (index tables) for AuditEvents written as ordinary resources. */
  const genericSearch = (q: ReturnType<typeof parseSearch>['query']) => {
    const c = compileSearch(q, blinder);
    return compiledIds(generic, c, q.count, q.offset);
  };
  const both = async (qs: string): Promise<{ generic: string[]; journal: string[] }> => {
    const parsed = parseSearch('AuditEvent', [...new URLSearchParams(qs)], { strict: true, defaultCount: 1000, maxCount: 1000 });
    return { generic: genericSearch(parsed.query), journal: journal.search(parsed.query, blinder).seqs.map(String) };
  };

  it('finds exactly what the generic store finds, query by query', async () => {
    const queries = [
      '', 'action=R', 'action=C,U', 'action=|E', 'action=http://hl7.org/fhir/audit-event-action|R', 'action:not=R',
      'outcome=0', 'outcome=4,8', 'type=rest', 'type=http://dicom.nema.org/resources/ontology/DCM|110114', 'type=http://terminology.hl7.org/CodeSystem/audit-event-type|',
      'subtype=read', 'subtype=http://hl7.org/fhir/restful-interaction|create', 'subtype=urn:custos:operation|$verify', 'subtype=read,vread',
      'agent=Practitioner/doc1', 'agent=Patient/p1', 'agent=doc1', 'agent:Practitioner=doc1', 'agent:identifier=urn:custos:client|backend', 'agent:identifier=portal',
      'entity=Observation/o3', 'entity=Patient/p2', 'entity:missing=true', 'agent:missing=true',
      'patient=p0', 'patient=Patient/p1', 'patient=p0,p2', 'patient=p1&action=R', 'patient=p2&outcome=0&date=ge2026-11-21',
      'date=2026-11-20', 'date=ge2026-11-21T10:00:00Z', 'date=lt2026-11-21', 'date=gt2026-11-21T10:00:00Z&date=le2026-11-22', 'date=sa2026-11-22', 'date=eb2026-11-21', 'date=ne2026-11-20',
      '_lastUpdated=ge2026-11-21', '_id=3,5,70', '_id:not=1',
    ];
    let nonEmpty = 0;
    for (const q of queries) {
      const r = await both(q);
      assert.deepEqual(r.journal.sort(), r.generic.sort(), q);
      if (r.generic.length > 0 && r.generic.length < events.length) nonEmpty++;
    }
    assert.ok(nonEmpty >= 30, `only ${nonEmpty} queries select a proper, non-empty subset`);
  });

  it('finds a patient\'s and a user\'s events through the partial indexes, and a date range through recorded', () => {
    const plan = (qs: string) => {
      const parsed = parseSearch('AuditEvent', [...new URLSearchParams(qs)], { strict: true, defaultCount: 10, maxCount: 10 });
      const w = compileJournalWhere(parsed.query, blinder);
      return (db.prepare(`EXPLAIN QUERY PLAN SELECT e.seq FROM audit_event e WHERE ${w.sql} ORDER BY e.seq`).all(...w.params) as Array<{ detail: string }>).map((r) => r.detail).join('; ');
    };
    assert.match(plan('patient=p1'), /audit_key_patient/);
    assert.match(plan('entity=Patient/p1'), /audit_key_patient/);
    assert.match(plan('agent=Practitioner/doc1'), /audit_key_agent/);
    assert.match(plan('date=ge2026-11-22&date=lt2026-11-23'), /audit_event_recorded/);
  });

  it('gives back each AuditEvent as written, decrypting its batch', () => {
    const got = journal.events([5, 40, 1], () => dataKey.key);
    assert.deepEqual(got.map((g) => g.seq), [5, 40, 1]);
    for (const g of got) assert.deepEqual(JSON.parse(g.json), events[g.seq - 1]);
    assert.throws(() => journal.events([5], () => randomBytes(32)));
  });

  it('sorts by date and pages with totals', async () => {
    const parsed = parseSearch('AuditEvent', [['patient', 'p0'], ['_sort', '-date'], ['_count', '5']], { strict: true, defaultCount: 1000, maxCount: 1000 });
    const all = genericSearch({ ...parsed.query, count: 1000, offset: 0 });
    const j = journal.search({ ...parsed.query, offset: 5 }, blinder);
    assert.deepEqual(j.seqs.map(String), all.slice(5, 10));
    assert.equal(j.total, all.length);
    assert.equal(j.hasMore, all.length > 10);
  });

  it('refuses what it does not index, with a clear message', () => {
    const parsed = parseSearch('AuditEvent', [['site', 'x']], { strict: false, defaultCount: 10, maxCount: 10 });
    assert.throws(() => journal.search({ ...parsed.query, filters: [{ param: 'site', type: 'token', values: [{ prefix: 'eq', value: 'x' }], blinded: false }] }, blinder), /not supported on AuditEvent/);
    // A modifier it does not implement is refused, not ignored (which would match as if it were absent).
    for (const [param, modifier] of [['action', 'text'], ['subtype', 'text'], ['entity', 'identifier'], ['outcome', 'in']] as const) {
      const filter = { param, type: param === 'entity' ? 'reference' as const : 'token' as const, modifier, values: [{ prefix: 'eq' as const, value: 'x' }], blinded: false };
      assert.throws(() => journal.search({ ...parsed.query, filters: [filter] }, blinder), /Modifier ':.+' is not supported/, `${param}:${modifier}`);
    }
  });
});
