/**
 * The audit trail's own storage.
 *
 * An AuditEvent is written once and never changed, and the server writes one per request, so
 * the generic version machinery (a current row, a version row, AES-GCM per version, index rows
 * in several tables) costs several times what it must. Here:
 * - audit_event: one row per AuditEvent, keyed by its gapless audit sequence number, with its
 *   single-valued search keys as columns (recorded, action, outcome, type, client) and its content
 *   hash; indexed only on `recorded`;
 * - audit_key: the resources it names, one row per resource with flags for how (agent, entity,
 *   patient): the only inserts at scattered places;
 * - audit_batch: the canonical JSON of the AuditEvents of one write transaction, NDJSON, sealed
 *   once with AES-256-GCM.
 * Measured in-process (bench/tmp/journal.mts): 51–68 µs of CPU per AuditEvent of a read, against
 * 170 µs as a generic resource with its own index tables.
 */
import type { AuditEvent } from '@medplum/fhirtypes';
import type Database from 'better-sqlite3';
import { createHash } from 'node:crypto';
import { AUDIT_SEQUENCE_URL, CLIENT_ID_SYSTEM } from '../../fhir/audit-port.js';
import { AUDIT_ENTITY_PATIENT_URL } from '../../fhir/audit-view.js';
import { AUDIT_EVENT_SEARCH_PARAMS } from '../../fhir/definitions.js';
import { badRequest, notSupported } from '../../fhir/outcome.js';
import type { Blinder } from '../blind.js';
import { canonicalJson } from '../content-hash.js';
import { open, seal } from '../crypto.js';
import { parseDateRange, parseReference } from '../indexer.js';
import type { AccessCondition, Prefix, SearchFilter, SearchPosition, SearchQuery } from '../types.js';
import { afterClause, splitToken, type OrderTerm } from './search.js';

export const AUDIT_JOURNAL_SCHEMA = `
CREATE TABLE IF NOT EXISTS audit_batch (
  id INTEGER PRIMARY KEY,
  first_seq INTEGER NOT NULL,
  key_id INTEGER NOT NULL,         -- data_key.key_id (scope 'audit')
  body BLOB NOT NULL               -- nonce || tag || AES-GCM(NDJSON of canonical AuditEvents), AAD audit-batch/<first_seq>
);
CREATE TABLE IF NOT EXISTS audit_event (
  seq INTEGER PRIMARY KEY,         -- the audit sequence number; the AuditEvent's id is its decimal form
  batch INTEGER NOT NULL,          -- audit_batch.id; its line is seq - first_seq
  recorded INTEGER NOT NULL,       -- AuditEvent.recorded, epoch ms
  last_updated INTEGER NOT NULL,
  action TEXT,
  outcome TEXT,
  type_system TEXT,
  type_code TEXT,
  sub1_system TEXT,                -- subtype: the interaction (or security event) ...
  sub1_code TEXT,
  sub2_system TEXT,                -- ... and the operation, if any
  sub2_code TEXT,
  client TEXT,                     -- blinded client id (agent:identifier)
  content_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_event_recorded ON audit_event (recorded);
CREATE TABLE IF NOT EXISTS audit_key (
  seq INTEGER NOT NULL,
  value TEXT NOT NULL,             -- Type/id of a resource the AuditEvent names
  flags INTEGER NOT NULL,          -- 1 agent, 2 entity, 4 patient
  PRIMARY KEY (seq, value)         -- appended: clustered by event
) WITHOUT ROWID;
-- Looked up by patient (a patient's trail) and by agent (a user's accesses; few distinct values):
-- partial indexes, so the entity references of reads (one random resource each) are not indexed.
-- Queries repeat these WHERE terms literally, which is what lets SQLite use them.
CREATE INDEX IF NOT EXISTS audit_key_patient ON audit_key (value, seq) WHERE (flags & 4) != 0;
CREATE INDEX IF NOT EXISTS audit_key_agent ON audit_key (value, seq) WHERE (flags & 1) != 0;
`;

/** An AuditEvent's id is its audit sequence number (decimal); undefined for any other id. */
export function auditSeq(id: string): number | undefined {
  return /^[1-9]\d{0,15}$/.test(id) ? Number(id) : undefined;
}

/** One AuditEvent as the journal stores it. */
export interface JournalEntry {
  seq: number;
  recorded: number;
  lastUpdated: number;
  action: string | null;
  outcome: string | null;
  typeSystem: string | null;
  typeCode: string | null;
  subtypes: Array<{ system: string | null; code: string }>;
  client: string | null;
  /** Each resource it names, with how (KEY_FLAGS). */
  keys: Map<string, number>;
  /** RFC 8785 canonical JSON of the AuditEvent (its NDJSON line) and its SHA-256. */
  json: string;
  contentHash: string;
}

/** How an AuditEvent names a resource (audit_key.flags). */
export const KEY_FLAGS = { agent: 1, entity: 2, patient: 4 } as const;
export type KeyParam = keyof typeof KEY_FLAGS;

const LOCAL_REF = /^([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[^/]+)?$/;

/** "Type/id" of a local reference (a version reference names its resource), else undefined. */
function localRef(reference: string | undefined): string | undefined {
  const m = reference ? LOCAL_REF.exec(reference) : null;
  return m ? `${m[1]}/${m[2]}` : undefined;
}

/** The journal's rows for a built AuditEvent (with id and meta set). */
export function journalEntry(event: AuditEvent, blinder: Blinder): JournalEntry {
  const seq = event.extension?.find((e) => e.url === AUDIT_SEQUENCE_URL)?.valueInteger;
  if (!Number.isInteger(seq) || String(seq) !== event.id) throw new Error('a journal AuditEvent has its audit sequence number as id and extension');
  const keys = new Map<string, number>();
  const add = (param: KeyParam, value: string | undefined) => {
    if (value !== undefined) keys.set(value, (keys.get(value) ?? 0) | KEY_FLAGS[param]);
  };
  let client: string | null = null;
  for (const a of event.agent ?? []) {
    const ref = localRef(a.who?.reference);
    add('agent', ref);
    if (ref?.startsWith('Patient/')) add('patient', ref);
    if (a.who?.identifier?.system === CLIENT_ID_SYSTEM && a.who.identifier.value) client = blinder.token('agent:identifier', a.who.identifier.value);
  }
  for (const e of event.entity ?? []) {
    const ref = localRef(e.what?.reference);
    add('entity', ref);
    if (ref?.startsWith('Patient/')) add('patient', ref);
    for (const x of e.extension ?? []) if (x.url === AUDIT_ENTITY_PATIENT_URL) add('patient', localRef(x.valueReference?.reference));
  }
  const subtypes = (event.subtype ?? []).filter((c) => c.code).map((c) => ({ system: c.system ?? null, code: c.code! }));
  if (subtypes.length > 2) throw new Error('a journal AuditEvent has at most two subtypes (the interaction and the operation)');
  const json = canonicalJson(event);
  return {
    seq: seq!, recorded: Date.parse(event.recorded!), lastUpdated: Date.parse(event.meta?.lastUpdated ?? event.recorded!),
    action: event.action ?? null, outcome: event.outcome ?? null, typeSystem: event.type?.system ?? null, typeCode: event.type?.code ?? null,
    subtypes, client, keys, json, contentHash: createHash('sha256').update(json, 'utf8').digest('hex'),
  };
}

/** An entry's stored rows as the integrity check compares them (its columns, then each named resource). */
export function journalRowTuples(e: Pick<JournalEntry, 'recorded' | 'lastUpdated' | 'action' | 'outcome' | 'typeSystem' | 'typeCode' | 'subtypes' | 'client' | 'keys'>): Array<{ table: string; param: string; values: Array<string | number | null> }> {
  return [
    { table: 'audit_event', param: 'columns', values: [e.recorded, e.lastUpdated, e.action, e.outcome, e.typeSystem, e.typeCode,
      e.subtypes[0]?.system ?? null, e.subtypes[0]?.code ?? null, e.subtypes[1]?.system ?? null, e.subtypes[1]?.code ?? null, e.client] },
    ...[...e.keys].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([value, flags]) => ({ table: 'audit_key', param: 'names', values: [value, flags] })),
  ];
}

export const batchAad = (firstSeq: number) => `audit-batch/${firstSeq}`;
/** Rows per multi-row INSERT (SQLite allows 32,766 parameters per statement). */
const ROWS_PER_INSERT = 200;

/** Journal writes and reads on one connection (writes inside the caller's transaction). */
export class AuditJournal {
  private readonly stmts = new Map<string, Database.Statement>();

  constructor(private readonly db: Database.Database) {}

  private stmt(sql: string): Database.Statement {
    let s = this.stmts.get(sql);
    if (!s) {
      s = this.db.prepare(sql);
      this.stmts.set(sql, s);
    }
    return s;
  }

  /** Appends consecutive entries as one sealed batch; the caller's transaction commits them. */
  append(entries: JournalEntry[], key: { keyId: number; key: Buffer }): void {
    if (entries.length === 0) return;
    const first = entries[0]!.seq;
    entries.forEach((e, i) => { if (e.seq !== first + i) throw new Error('journal entries of a batch have consecutive sequence numbers'); });
    const body = seal(key.key, Buffer.from(entries.map((e) => e.json).join('\n'), 'utf8'), batchAad(first));
    const batch = Number(this.stmt('INSERT INTO audit_batch (first_seq, key_id, body) VALUES (?, ?, ?)').run(first, key.keyId, body).lastInsertRowid);
    this.insertRows('audit_event', ['seq', 'batch', 'recorded', 'last_updated', 'action', 'outcome', 'type_system', 'type_code', 'sub1_system', 'sub1_code', 'sub2_system', 'sub2_code', 'client', 'content_hash'],
      entries.map((e) => [e.seq, batch, e.recorded, e.lastUpdated, e.action, e.outcome, e.typeSystem, e.typeCode,
        e.subtypes[0]?.system ?? null, e.subtypes[0]?.code ?? null, e.subtypes[1]?.system ?? null, e.subtypes[1]?.code ?? null, e.client, e.contentHash]));
    this.insertRows('audit_key', ['seq', 'value', 'flags'], entries.flatMap((e) => [...e.keys].map(([value, flags]) => [e.seq, value, flags])));
  }

  private insertRows(table: string, cols: string[], rows: unknown[][]): void {
    for (let i = 0; i < rows.length; i += ROWS_PER_INSERT) {
      const chunk = rows.slice(i, i + ROWS_PER_INSERT);
      const tuple = `(${cols.map(() => '?').join(', ')})`;
      this.stmt(`INSERT INTO ${table} (${cols.join(', ')}) VALUES ${chunk.map(() => tuple).join(', ')}`).run(chunk.flat());
    }
  }

  /** The AuditEvents with these sequence numbers (in that order; missing ones left out), decrypting each batch once. */
  events(seqs: number[], keyFor: (keyId: number) => Buffer | undefined): Array<{ seq: number; json: string; contentHash: string; lastUpdated: number }> {
    if (seqs.length === 0) return [];
    const rows = this.stmt(`SELECT e.seq, e.batch, e.content_hash, e.last_updated, b.first_seq, b.key_id, b.body FROM audit_event e JOIN audit_batch b ON b.id = e.batch
      WHERE e.seq IN (SELECT value FROM json_each(?))`).all(JSON.stringify(seqs)) as Array<{ seq: number; batch: number; content_hash: string; last_updated: number; first_seq: number; key_id: number; body: Buffer }>;
    const lines = new Map<number, string[]>();
    const bySeq = new Map<number, { seq: number; json: string; contentHash: string; lastUpdated: number }>();
    for (const r of rows) {
      let batch = lines.get(r.batch);
      if (!batch) {
        const key = keyFor(r.key_id);
        if (!key) throw new Error(`data key ${r.key_id} of audit batch ${r.batch} is gone`);
        batch = open(key, r.body, batchAad(r.first_seq)).toString('utf8').split('\n');
        lines.set(r.batch, batch);
      }
      const json = batch[r.seq - r.first_seq];
      if (json !== undefined) bySeq.set(r.seq, { seq: r.seq, json, contentHash: r.content_hash, lastUpdated: r.last_updated });
    }
    return seqs.flatMap((s) => (bySeq.has(s) ? [bySeq.get(s)!] : []));
  }

  /** The resources the events name, with how (KEY_FLAGS). */
  keysOf(seqs: number[]): Array<{ seq: number; value: string; flags: number }> {
    if (seqs.length === 0) return [];
    return this.stmt('SELECT seq, value, flags FROM audit_key WHERE seq IN (SELECT value FROM json_each(?)) ORDER BY seq, value')
      .all(JSON.stringify(seqs)) as Array<{ seq: number; value: string; flags: number }>;
  }

  /** Every sequence number in the journal, ascending. */
  allSeqs(): number[] {
    return this.stmt('SELECT seq FROM audit_event ORDER BY seq').pluck().all() as number[];
  }

  /** Type history: newest first, within [since, before] on last_updated. */
  history(q: { since?: number; before?: number; count: number; offset: number }): { seqs: number[]; total: number } {
    const where: string[] = [];
    const params: unknown[] = [];
    if (q.since !== undefined) { where.push('last_updated >= ?'); params.push(q.since); }
    if (q.before !== undefined) { where.push('last_updated <= ?'); params.push(q.before); }
    const w = where.length ? `WHERE ${where.join(' AND ')}` : '';
    const total = this.stmt(`SELECT count(*) FROM audit_event ${w}`).pluck().get(...params) as number;
    const seqs = this.stmt(`SELECT seq FROM audit_event ${w} ORDER BY seq DESC LIMIT ? OFFSET ?`).pluck().all(...params, q.count, q.offset) as number[];
    return { seqs, total };
  }

  /** One page of the sequence numbers that match, in order, and the total when asked. */
  search(q: SearchQuery, blinder: Blinder): { seqs: number[]; total?: number; hasMore: boolean; last?: SearchPosition } {
    const where = compileJournalWhere(q, blinder);
    const terms = journalTerms(q);
    const order = [...terms.map((t) => `${t.sql} ${t.descending ? 'DESC' : 'ASC'}`), 'e.seq ASC'].join(', ');
    const after = q.after ? afterClause(terms, q.after, 'e.seq') : undefined;
    const page = this.db.prepare(`SELECT e.seq FROM audit_event e WHERE ${where.sql}${after ? ` AND (${after.sql})` : ''} ORDER BY ${order} LIMIT ? OFFSET ?`).pluck()
      .all(...where.params, ...(after?.params ?? []), q.count + 1, after ? 0 : q.offset) as number[];
    const hasMore = page.length > q.count;
    const seqs = page.slice(0, q.count);
    let total: number | undefined;
    if (q.total !== 'none' || q.count === 0) total = this.db.prepare(`SELECT count(*) FROM audit_event e WHERE ${where.sql}`).pluck().get(...where.params) as number;
    else if (!hasMore && !after && (seqs.length > 0 || q.offset === 0)) total = q.offset + seqs.length;
    let last: SearchPosition | undefined;
    if (hasMore) {
      const seq = seqs[seqs.length - 1]!;
      const keys = terms.length ? this.db.prepare(`SELECT ${terms.map((t) => t.sql).join(', ')} FROM audit_event e WHERE e.seq = ?`).raw().get(seq) as Array<string | number | null> : [];
      last = { keys, pk: seq };
    }
    return { seqs, total, hasMore, ...(last ? { last } : {}) };
  }
}

interface Sql { sql: string; params: unknown[] }


export function compileJournalWhere(q: SearchQuery, blinder: Blinder): Sql {
  const parts: Sql[] = q.filters.map((f) => filterSql(f, blinder));
  if (q.compartment) parts.push(keyIn('patient', [`${q.compartment.resourceType}/${q.compartment.id}`]));
  if (q.ids) parts.push(seqIn(q.ids));
  if (q.access !== undefined) parts.push(accessSql(q.access, blinder));
  if (parts.length === 0) return { sql: '1', params: [] };
  return { sql: parts.map((p) => `(${p.sql})`).join(' AND '), params: parts.flatMap((p) => p.params) };
}

function accessSql(a: AccessCondition, blinder: Blinder): Sql {
  if (a === true) return { sql: '1', params: [] };
  if (a === false) return { sql: '0', params: [] };
  if ('and' in a || 'or' in a) {
    const list = 'and' in a ? a.and : a.or;
    if (list.length === 0) return { sql: 'and' in a ? '1' : '0', params: [] };
    const parts = list.map((x) => accessSql(x, blinder));
    return { sql: parts.map((p) => `(${p.sql})`).join('and' in a ? ' AND ' : ' OR '), params: parts.flatMap((p) => p.params) };
  }
  if ('not' in a) {
    const inner = accessSql(a.not, blinder);
    return { sql: `NOT (${inner.sql})`, params: inner.params };
  }
  if ('ids' in a) return seqIn(a.ids);
  if ('compartment' in a) return a.compartment.patients.length ? keyIn('patient', a.compartment.patients.map((p) => `Patient/${p}`)) : { sql: '0', params: [] };
  if ('outside' in a) {
    const list = a.outside.patients.map((p) => `Patient/${p}`);
    const notIn = list.length ? ` AND k.value NOT IN (${list.map(() => '?').join(', ')})` : '';
    return { sql: `EXISTS (SELECT 1 FROM audit_key k WHERE k.seq = e.seq AND (k.flags & ${KEY_FLAGS.patient}) != 0${notIn})`, params: list };
  }
  return filterSql(a.filter, blinder);
}

/** Ids are decimal sequence numbers; any other id matches nothing. */
function seqIn(ids: readonly string[]): Sql {
  const seqs = ids.flatMap((id) => { const n = auditSeq(id); return n === undefined ? [] : [n]; });
  return seqs.length ? { sql: `e.seq IN (${seqs.map(() => '?').join(', ')})`, params: seqs } : { sql: '0', params: [] };
}

/**
 * The events naming one of `values` as `param`. Patients and agents: an IN list SQLite starts the
 * query from (the partial index); an entity that is a Patient also goes through the patient index
 * (a Patient entity is always one of the event's patients); other entities are checked per event.
 */
function keyIn(param: KeyParam, values: string[]): Sql {
  const list = values.map(() => '?').join(', ');
  if (param === 'entity' && values.every((v) => v.startsWith('Patient/'))) {
    return { sql: `e.seq IN (SELECT k.seq FROM audit_key k WHERE k.value IN (${list}) AND (k.flags & 4) != 0 AND (k.flags & 2) != 0)`, params: values };
  }
  if (param === 'entity') return { sql: `EXISTS (SELECT 1 FROM audit_key k WHERE k.seq = e.seq AND k.value IN (${list}) AND (k.flags & 2) != 0)`, params: values };
  return { sql: `e.seq IN (SELECT k.seq FROM audit_key k WHERE k.value IN (${list}) AND (k.flags & ${KEY_FLAGS[param]}) != 0)`, params: values };
}

/** A subtype token against the two subtype columns (generic semantics: system|code, code, |code, system|). */
function subtypeToken(value: string): Sql {
  const t = splitToken(value);
  const one = (n: 1 | 2): Sql => {
    const sys = `e.sub${n}_system`;
    const code = `e.sub${n}_code`;
    if (t.system === undefined) return { sql: `${code} = ?`, params: [t.code] };
    if (t.system === '') return { sql: `${code} = ? AND ${sys} IS NULL`, params: [t.code] };
    if (t.code === '') return { sql: `${sys} = ?`, params: [t.system] };
    return { sql: `${code} = ? AND ${sys} = ?`, params: [t.code, t.system] };
  };
  const a = one(1);
  const b = one(2);
  return { sql: `(${a.sql}) OR (${b.sql})`, params: [...a.params, ...b.params] };
}

function filterSql(f: SearchFilter, blinder: Blinder): Sql {
  if (f.chain) throw notSupported(`Chained parameters are not supported on AuditEvent ('${f.param}')`);
  if (f.modifier === 'missing') return missingSql(f);
  // What the journal does not implement is refused, never matched as if the modifier were absent.
  const typeModifier = f.modifier !== undefined && /^[A-Z]/.test(f.modifier);
  const known = f.modifier === undefined || f.modifier === 'not' || (typeModifier && f.param in KEY_FLAGS) || (f.modifier === 'identifier' && f.param === 'agent');
  if (!known) throw notSupported(`Modifier ':${f.modifier}' is not supported for '${f.param}' on AuditEvent`);
  const or = (conds: Sql[]): Sql => (conds.length === 1 ? conds[0]! : { sql: conds.map((c) => `(${c.sql})`).join(' OR ') || '0', params: conds.flatMap((c) => c.params) });
  let sql: Sql;
  switch (f.param) {
    case '_id':
      sql = seqIn(f.values.map((v) => v.value));
      break;
    case '_lastUpdated':
      sql = or(f.values.map((v) => dateSql('e.last_updated', v.prefix, v.value)));
      break;
    case 'date':
      sql = or(f.values.map((v) => dateSql('e.recorded', v.prefix, v.value)));
      break;
    case 'action':
      sql = or(f.values.map((v) => codeToken('e.action', v.value)));
      break;
    case 'outcome':
      sql = or(f.values.map((v) => codeToken('e.outcome', v.value)));
      break;
    case 'type':
      sql = or(f.values.map((v) => typeToken(v.value)));
      break;
    case 'subtype':
      sql = or(f.values.map((v) => subtypeToken(v.value)));
      break;
    case 'agent':
      if (f.modifier === 'identifier') {
        sql = or(f.values.map((v) => {
          const t = splitToken(v.value);
          if (t.system !== undefined && t.system !== CLIENT_ID_SYSTEM) return { sql: '0', params: [] };
          return { sql: 'e.client = ?', params: [blinder.token('agent:identifier', t.code)] };
        }));
        break;
      }
      sql = referenceSql('agent', f);
      break;
    case 'entity':
    case 'patient':
      sql = referenceSql(f.param as KeyParam, f);
      break;
    default:
      throw notSupported(`Search parameter '${f.param}' is not supported on AuditEvent; supported: ${AUDIT_EVENT_SEARCH_PARAMS.join(', ')}`);
  }
  return f.modifier === 'not' ? { sql: `NOT (${sql.sql})`, params: sql.params } : sql;
}

function missingSql(f: SearchFilter): Sql {
  const missing = f.values[0]?.value === 'true';
  const column: Record<string, string> = { date: 'e.recorded', action: 'e.action', outcome: 'e.outcome', type: 'e.type_code', subtype: 'e.sub1_code' };
  let present: Sql;
  if (column[f.param]) present = { sql: `${column[f.param]} IS NOT NULL`, params: [] };
  else if (f.param in KEY_FLAGS) {
    // audit_key is keyed by value: this reads every key of the event (a few).
    present = { sql: `EXISTS (SELECT 1 FROM audit_key k WHERE k.seq = e.seq AND (k.flags & ${KEY_FLAGS[f.param as KeyParam]}) != 0)`, params: [] };
  } else throw notSupported(`':missing' is not supported for '${f.param}' on AuditEvent`);
  return missing ? { sql: `NOT (${present.sql})`, params: present.params } : present;
}

/**
 * A `code` element (action, outcome) has no system of its own, as in the generic index (its rows
 * have system NULL): `x`, `|x` match it; `system|x` does not.
 */
function codeToken(column: string, value: string): Sql {
  const t = splitToken(value);
  if (t.system !== undefined && t.system !== '') return { sql: '0', params: [] };
  return { sql: `${column} = ?`, params: [t.code] };
}

function typeToken(value: string): Sql {
  const t = splitToken(value);
  if (t.system === undefined) return { sql: 'e.type_code = ?', params: [t.code] };
  if (t.system === '') return { sql: 'e.type_code = ? AND e.type_system IS NULL', params: [t.code] };
  if (t.code === '') return { sql: 'e.type_system = ?', params: [t.system] };
  return { sql: 'e.type_code = ? AND e.type_system = ?', params: [t.code, t.system] };
}

function referenceSql(param: KeyParam, f: SearchFilter): Sql {
  const typeModifier = f.modifier && /^[A-Z]/.test(f.modifier) ? f.modifier : undefined;
  const values: string[] = [];
  const idOnly: string[] = [];
  for (const v of f.values) {
    if (!v.value.includes('/') && !v.value.includes(':')) {
      if (param === 'patient' || typeModifier) values.push(`${typeModifier ?? 'Patient'}/${v.value}`);
      else idOnly.push(v.value);
      continue;
    }
    const parsed = parseReference(v.value);
    if (!parsed) throw badRequest(`Parameter '${param}' has an invalid reference '${v.value}'`);
    if (parsed.targetType && parsed.targetId && (!typeModifier || parsed.targetType === typeModifier)) values.push(`${parsed.targetType}/${parsed.targetId}`);
  }
  const parts: Sql[] = [];
  if (values.length) parts.push(keyIn(param, values));
  // A bare id on a parameter with several target types: any type.
  for (const id of idOnly) {
    parts.push({ sql: `EXISTS (SELECT 1 FROM audit_key k WHERE k.value LIKE ? ESCAPE '\\' AND k.seq = e.seq AND (k.flags & ${KEY_FLAGS[param]}) != 0)`, params: [`%/${id.replace(/[\\%_]/g, (c) => `\\${c}`)}`] });
  }
  if (parts.length === 0) return { sql: '0', params: [] };
  return { sql: parts.map((p) => `(${p.sql})`).join(' OR '), params: parts.flatMap((p) => p.params) };
}

/** FHIR date prefixes on an instant column (AuditEvent.recorded, meta.lastUpdated). */
function dateSql(column: string, prefix: Prefix, value: string): Sql {
  const r = parseDateRange(value);
  if (!r) throw badRequest(`Invalid date '${value}'`);
  const [a, b] = r;
  switch (prefix) {
    case 'eq': return { sql: `${column} >= ? AND ${column} <= ?`, params: [a, b] };
    case 'ne': return { sql: `${column} < ? OR ${column} > ?`, params: [a, b] };
    case 'gt': case 'sa': return { sql: `${column} > ?`, params: [b] };
    case 'lt': case 'eb': return { sql: `${column} < ?`, params: [a] };
    case 'ge': return { sql: `${column} >= ?`, params: [a] };
    case 'le': return { sql: `${column} <= ?`, params: [b] };
    case 'ap': {
      const slack = Math.round(0.1 * Math.abs(Date.now() - (a + b) / 2));
      return { sql: `${column} >= ? AND ${column} <= ?`, params: [a - slack, b + slack] };
    }
  }
}

/** The journal's sort keys: columns of audit_event, never missing (the tie-breaker e.seq follows). */
function journalTerms(q: SearchQuery): OrderTerm[] {
  return q.sort.map((rule) => {
    const column = ({ date: 'e.recorded', _lastUpdated: 'e.last_updated', _id: 'e.seq' } as Record<string, string>)[rule.code];
    if (!column) throw notSupported(`Cannot sort AuditEvents by '${rule.code}'; by date, _lastUpdated or _id`);
    return { sql: column, params: [], descending: rule.descending, nullable: false };
  });
}
