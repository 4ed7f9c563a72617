import Database from 'better-sqlite3';
import fs from 'node:fs';
import path from 'node:path';
import type { Worker } from 'node:worker_threads';
import type { AuditEvent, Resource } from '@medplum/fhirtypes';
import { getPatientCompartmentParams, getTypeSearchParameters } from '../../fhir/definitions.js';
import { Blinder } from '../blind.js';
import { contentHash } from '../content-hash.js';
import { bodyAad, open, seal, type MasterKeys } from '../crypto.js';
import { DataKeyCache, type DataKeyRows } from '../data-keys.js';
import { createIndexer } from '../indexer.js';
import { VersionConflictError } from '../errors.js';
import type {
  HistoryQuery, HistoryResult, IndexRows, LedgerStore, ReadOptions, SearchPosition, SearchQuery, SearchResult, Store, StoredVersion, TotalEstimate,
  StoreReader, StoreTransaction, VersionWriteHook, WriteInput,
  IndexRowTuple, IntegrityReader, LedgerBatch, LedgerLeaf, ScannedVersion,
} from '../types.js';
import { WriteQueue } from '../write-queue.js';
import { startWorker } from '../../workers.js';
import { upgradeDatabase, UPGRADABLE_VERSIONS, type MigrationReport } from './migrate.js';
import { SCHEMA, SCHEMA_VERSION } from './schema.js';
import { SqliteLedgerStore } from './ledger-store.js';
import { IndexRowWriter, primaryDateLo, storedReferenceRows } from './index-rows.js';
import { INDEX_KINDS, indexTable, type IndexKind } from './index-tables.js';
import { AuditJournal, batchAad, journalEntry, journalRowTuples } from './audit-journal.js';
import { auditVersion, JournalReader } from './journal-reader.js';
import { accessClause, NARROW_SPAN, referenceParamSql } from './search.js';
import { compileSearch, pageRows, type CompiledSearch, type Population } from './search-plan.js';

/** _total=estimate counts populations up to this size exactly, and samples this many rows of larger ones. */
const ESTIMATE_EXACT = 2000;
const ESTIMATE_SAMPLE = 400;
import type { WriterTurns } from './writer-turns.js';

export interface SqliteStoreOptions {
  /** Database file; ':memory:' is not supported (reader and writer need the same file). */
  file: string;
  keys: MasterKeys;
  hooks?: VersionWriteHook[];
  /** Checkpoint the WAL from a worker thread instead of inside commits (default true). */
  backgroundCheckpoint?: boolean;
  /**
   * A second writer on a database another store already checkpoints (the audit writer thread):
   * its commits never checkpoint. Otherwise every commit of it would try to, while readers keep
   * the WAL from being emptied (measured: 20 ms per commit).
   */
  noCheckpoints?: boolean;
  /**
   * Turns at the write lock with a writer connection on another thread (WriterTurns): `server`
   * waits for its turn without blocking the event loop, `other` lets the server go first.
   */
  turns?: { shared: WriterTurns; as: 'server' | 'other' };
}

interface VersionRow {
  type: string; id: string; version: number; last_updated: number; deleted: number;
  key_id: number | null; body: Buffer | null; content_hash: string;
}

const VERSION_COLS = 'v.type, v.id, v.version, v.last_updated, v.deleted, v.key_id, v.body, v.content_hash';

function openDb(file: string, readonly: boolean): Database.Database {
  const db = new Database(file, { readonly, fileMustExist: readonly });
  db.pragma('busy_timeout = 5000');
  if (!readonly) {
    db.pragma('journal_mode = WAL');
    // Savepoints of grouped jobs copy the pages they touch to the statement journal: keep it in
    // memory rather than in a temp file (it only lives until the job's RELEASE).
    db.pragma('temp_store = MEMORY');
  }
  // The writer's commits are made durable by an fdatasync of the WAL on the libuv thread pool
  // (the write queue's flush) before any write is acknowledged, so the event loop does not wait
  // for the disk; checkpoints still sync the database file themselves.
  db.pragma('synchronous = NORMAL');
  // Index B-trees are written at scattered places; keep their pages in memory (64 MiB).
  db.pragma('cache_size = -65536');
  return db;
}

/**
 * The database holds patient data: owner-only, like the keys. Created 0600 before SQLite opens it
 * (SQLite would use the umask, and gives the -wal and -shm files the database file's mode); files
 * an earlier version left 0644 are tightened.
 */
function makePrivate(file: string): void {
  fs.closeSync(fs.openSync(file, 'a', 0o600));
  for (const f of [file, `${file}-wal`, `${file}-shm`]) {
    try {
      if ((fs.statSync(f).mode & 0o077) !== 0) fs.chmodSync(f, 0o600);
    } catch (err) {
      // Absent, or not ours to change (a read-only deployment's file).
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'EPERM') throw err;
    }
  }
}

/** Reads shared by the writer (inside a tx, sees its own writes) and the reader connection. */
class SqliteReader implements StoreReader {
  private readonly stmts = new Map<string, Database.Statement>();
  /** read-with-patients and patientsOf statements by type and params (their SQL depends on the type's reference storage). */
  private readonly patientQueries = new Map<string, { stmt: Database.Statement; params: unknown[] }>();

  protected readonly journal: AuditJournal;
  /** AuditEvents live in the audit journal, not in the version and index tables: every read of them goes here. */
  protected readonly trail: JournalReader;

  constructor(protected readonly db: Database.Database, protected readonly ctx: StoreContext) {
    this.journal = new AuditJournal(db);
    this.trail = new JournalReader(this.journal, ctx.blinder, (keyId) => ctx.keys.forRead(keyId, this.keyRows()));
  }

  protected stmt(sql: string): Database.Statement {
    let s = this.stmts.get(sql);
    if (!s) {
      s = this.db.prepare(sql);
      this.stmts.set(sql, s);
    }
    return s;
  }

  protected keyRows(): DataKeyRows {
    return {
      byScope: (scope) => {
        const r = this.stmt('SELECT key_id, wrapped FROM data_key WHERE scope = ?').get(scope) as { key_id: number; wrapped: Buffer } | undefined;
        return r && { keyId: r.key_id, wrapped: r.wrapped };
      },
      byId: (keyId) => this.stmt('SELECT scope, wrapped FROM data_key WHERE key_id = ?').get(keyId) as { scope: string; wrapped: Buffer } | undefined,
      nextId: () => (this.stmt('SELECT coalesce(max(key_id), 0) + 1 AS n FROM data_key').get() as { n: number }).n,
      insert: (scope, keyId, wrapped) => {
        this.stmt('INSERT INTO data_key (scope, key_id, wrapped) VALUES (?, ?, ?)').run(scope, keyId, wrapped);
      },
    };
  }

  protected toVersion(row: VersionRow): StoredVersion {
    const lastUpdated = new Date(row.last_updated).toISOString();
    const v: StoredVersion = {
      resourceType: row.type, id: row.id, versionId: row.version, lastUpdated,
      deleted: row.deleted === 1, contentHash: row.content_hash,
    };
    if (row.body && row.key_id !== null) {
      const key = this.ctx.keys.forRead(row.key_id, this.keyRows());
      if (!key) throw new Error(`data key ${row.key_id} for ${row.type}/${row.id} is gone (crypto-shredded)`);
      const plain = open(key, row.body, bodyAad(row.type, row.id, row.version));
      v.resource = JSON.parse(plain.toString('utf8')) as Resource;
    }
    return v;
  }

  async read(resourceType: string, id: string, options?: ReadOptions): Promise<StoredVersion | undefined> {
    if (resourceType === 'AuditEvent') return this.trail.read(id, options);
    const via = options?.patientsVia;
    if (!via?.length) {
      const row = this.stmt(`SELECT ${VERSION_COLS} FROM resource_current c JOIN resource_version v ON v.pk = c.pk AND v.version = c.version WHERE c.type = ? AND c.id = ?`)
        .get(resourceType, id) as VersionRow | undefined;
      return row && this.toVersion(row);
    }
    const key = `read\0${resourceType}\0${via.join(',')}`;
    let q = this.patientQueries.get(key);
    if (!q) {
      const p = patientsColumn(resourceType, via, 'c.pk');
      const stmt = this.db.prepare(`SELECT ${VERSION_COLS}, ${p.sql}
        FROM resource_current c JOIN resource_version v ON v.pk = c.pk AND v.version = c.version WHERE c.type = ? AND c.id = ?`);
      q = { stmt, params: p.params };
      this.patientQueries.set(key, q);
    }
    const row = q.stmt.get(...q.params, resourceType, id) as (VersionRow & { patients: string | null }) | undefined;
    if (!row) return undefined;
    const v = this.toVersion(row);
    v.patients = patientIds(row.patients);
    return v;
  }

  async vread(resourceType: string, id: string, versionId: number): Promise<StoredVersion | undefined> {
    if (resourceType === 'AuditEvent') return this.trail.vread(id, versionId);
    const row = this.stmt(`SELECT ${VERSION_COLS} FROM resource_current c JOIN resource_version v ON v.pk = c.pk WHERE c.type = ? AND c.id = ? AND v.version = ?`)
      .get(resourceType, id, versionId) as VersionRow | undefined;
    return row && this.toVersion(row);
  }

  async history(q: HistoryQuery): Promise<HistoryResult> {
    if (q.resourceType === 'AuditEvent') return this.trail.history(q);
    const where: string[] = [];
    const params: unknown[] = [];
    if (q.resourceType) { where.push('v.type = ?'); params.push(q.resourceType); }
    if (q.id) {
      if (!q.resourceType) throw new Error('history by id needs the resource type');
      where.push('v.pk = (SELECT pk FROM resource_current WHERE type = ? AND id = ?)');
      params.push(q.resourceType, q.id);
    }
    if (q.since) { where.push('v.last_updated >= ?'); params.push(Date.parse(q.since)); }
    if (q.before) { where.push('v.last_updated <= ?'); params.push(Date.parse(q.before)); }
    if (q.access !== undefined) {
      if (!q.resourceType) throw new Error('history with an access condition needs the resource type');
      const a = accessClause(q.access, { blinder: this.ctx.blinder, alias: 'c', resourceType: q.resourceType });
      where.push(`v.pk IN (SELECT c.pk FROM resource_current c WHERE c.type = ? AND (${a.sql}))`);
      params.push(q.resourceType, ...a.params);
    }
    const w = where.length ? `WHERE ${where.join(' AND ')}` : '';
    const total = (this.stmt(`SELECT count(*) AS n FROM resource_version v ${w}`).get(...params) as { n: number }).n;
    const rows = this.stmt(`SELECT ${VERSION_COLS} FROM resource_version v ${w} ORDER BY v.seq DESC LIMIT ? OFFSET ?`)
      .all(...params, q.count, q.offset) as VersionRow[];
    return { total, versions: rows.map((r) => this.toVersion(r)) };
  }

  async search(q: SearchQuery): Promise<SearchResult> {
    if (q.resourceType === 'AuditEvent') return this.trail.search(q);
    const c = compileSearch(q, this.ctx.blinder, (sql, params) => (this.stmt(sql).pluck().get(...params) as number));
    let matches: StoredVersion[] = [];
    let hasMore = false;
    let last: SearchPosition | undefined;
    if (q.count > 0) {
      const page = pageRows((sql, params) => this.stmt(sql).all(...params) as Array<{ pk: number; version: number }>, c, q.count + 1, q.after ? 0 : q.offset);
      hasMore = page.length > q.count;
      const rows = page.slice(0, q.count);
      if (hasMore) last = this.positionOf(c.keys, rows[rows.length - 1]!.pk);
      if (q.patientsVia?.length) matches = this.versionsWithPatients(q.resourceType, q.patientsVia, rows);
      else {
        const vread = this.stmt(`SELECT ${VERSION_COLS} FROM resource_version v WHERE v.pk = ? AND v.version = ?`);
        matches = rows.map((m) => this.toVersion(vread.get(m.pk, m.version) as VersionRow));
      }
    }
    let total: number | undefined;
    let estimate: TotalEstimate | undefined;
    if (q.total === 'estimate') {
      ({ total, estimate } = this.estimateTotal(q, c));
    } else if (q.total !== 'none' || q.count === 0) {
      total = this.stmt(c.count.sql).pluck().get(...c.count.params) as number;
    } else if (!hasMore && !q.after && (matches.length > 0 || q.offset === 0)) {
      total = q.offset + matches.length;
    }
    return { matches, total, hasMore, ...(last ? { last } : {}), ...(estimate ? { estimate } : {}) };
  }

  /**
   * _total=estimate: counted when that is cheap (a narrow filter leads, or the smallest population
   * has at most ESTIMATE_EXACT rows); else estimated from ESTIMATE_SAMPLE rows drawn at random from
   * the smallest population (an exact key's rows, the permitting patients' rows, or the type's
   * resources, sized by search_stats). A draw picks a key by its share of the rows, then the key's
   * first row at or after a random position in its pk range: a row is drawn in proportion to the
   * gap before it, so each draw is weighted by the inverse (Horvitz-Thompson), and the total is
   * the population's size times the weighted share that matches (a ratio estimator).
   */
  private estimateTotal(q: SearchQuery, c: CompiledSearch): { total: number; estimate?: TotalEstimate } {
    const exact = () => ({ total: this.stmt(c.count.sql).pluck().get(...c.count.params) as number });
    // A principal the access condition limits gets a count: the population and margin of an
    // estimate would tell how many rows exist that it may not see (another patient's, say).
    if (c.countIsCheap || q.access !== undefined) return exact();
    const stats = this.stmt('SELECT n FROM search_stats WHERE kind = ? AND a = ? AND b = ? AND c = ?').pluck();
    const typeRows: Population = { keys: [{ stats: ['type', q.resourceType, '', ''], table: 'resource_current', column: 'pk', cond: { sql: '+type = ? AND +deleted = 0', params: [q.resourceType] } }] };
    const sized = [...c.populations, typeRows].map((p) => {
      const keys = p.keys.map((k) => ({ ...k, n: (stats.get(...k.stats) as number | undefined) ?? 0 })).filter((k) => k.n > 0);
      return { keys, n: keys.reduce((sum, k) => sum + k.n, 0) };
    }).sort((a, b) => a.n - b.n);
    const pop = sized[0]!;
    if (pop.n <= ESTIMATE_EXACT) return exact();
    const positions = pop.keys.map(() => 0);
    for (let i = 0; i < ESTIMATE_SAMPLE; i++) {
      let r = Math.random() * pop.n;
      let k = 0;
      while (k < pop.keys.length - 1 && r >= pop.keys[k]!.n) r -= pop.keys[k++]!.n;
      positions[k]!++;
    }
    const draws: Array<{ pk: number; weight: number }> = [];
    pop.keys.forEach((k, i) => {
      if (positions[i] === 0) return;
      const rows = `SELECT ${k.column} FROM ${k.table} WHERE ${k.cond.sql}`;
      const [lo, hi] = this.stmt(`SELECT (${rows} ORDER BY ${k.column} LIMIT 1), (${rows} ORDER BY ${k.column} DESC LIMIT 1)`).raw()
        .get(...k.cond.params, ...k.cond.params) as [number | null, number | null];
      if (lo === null || hi === null) return;
      const at = Array.from({ length: positions[i]! }, () => lo + Math.floor(Math.random() * (hi - lo + 1)));
      // Each draw, then the row before it: the draw covers the positions in between. (Two
      // statements: as one, SQLite evaluates the draw again for every step of the second seek.)
      const after = (op: string, dir: string) => this.stmt(`SELECT (${rows} AND ${k.column} ${op} s.value ORDER BY ${k.column} ${dir} LIMIT 1) FROM json_each(?) s`).pluck();
      const drawn = after('>=', 'ASC').all(...k.cond.params, JSON.stringify(at)) as number[];
      const before = after('<', 'DESC').all(...k.cond.params, JSON.stringify(drawn)) as Array<number | null>;
      for (const [j, pk] of drawn.entries()) {
        const prev = before[j] ?? null;
        const gap = prev === null ? 1 : pk - prev;
        // 1 / P(draw): P = (n_k / N) * gap / span_k.
        draws.push({ pk, weight: (pop.n / k.n) * ((hi - lo + 1) / gap) });
      }
    });
    if (draws.length === 0) return exact();
    // CROSS JOIN keeps the drawn rows first: otherwise SQLite may scan the type and look each row up in the list.
    const matching = new Set(this.stmt(`SELECT DISTINCT c.pk FROM json_each(?) s CROSS JOIN resource_current c ON c.pk = s.value WHERE ${c.test.sql}`).pluck()
      .all(JSON.stringify(draws.map((d) => d.pk)), ...c.test.params) as number[]);
    const m = draws.length;
    const weights = draws.reduce((sum, d) => sum + d.weight, 0);
    const share = draws.reduce((sum, d) => sum + (matching.has(d.pk) ? d.weight : 0), 0) / weights;
    const hits = draws.filter((d) => matching.has(d.pk)).length;
    // 95 %: the ratio estimator's variance (normal approximation); with no hit or all hits, the
    // "rule of three" bound on what the sample could have missed.
    const mean = weights / m;
    const spread = draws.reduce((sum, d) => sum + (d.weight * ((matching.has(d.pk) ? 1 : 0) - share)) ** 2, 0) / (m * (m - 1) * mean * mean);
    const margin = hits === 0 || hits === m ? (3 * pop.n) / m : 1.96 * pop.n * Math.sqrt(spread);
    return { total: Math.round(pop.n * share), estimate: { margin: Math.ceil(margin), sample: m, population: pop.n } };
  }

  /** The sort keys of row `pk` (the page's last match), read back with the same expressions the order uses. */
  private positionOf(keys: Array<{ sql: string; params: unknown[] }>, pk: number): SearchPosition {
    if (keys.length === 0) return { keys: [], pk };
    const row = this.stmt(`SELECT ${keys.map((k) => k.sql).join(', ')} FROM resource_current c WHERE c.pk = ?`).raw().get(...keys.flatMap((k) => k.params), pk) as Array<string | number | null>;
    return { keys: row, pk };
  }

  /** Versions by (pk, version), each with the Patients its current index rows reference through `via`. */
  private versionsWithPatients(resourceType: string, via: string[], rows: Array<{ pk: number; version: number }>): StoredVersion[] {
    const key = `vread\0${resourceType}\0${via.join(',')}`;
    let q = this.patientQueries.get(key);
    if (!q) {
      const p = patientsColumn(resourceType, via, 'v.pk');
      const stmt = this.db.prepare(`SELECT ${VERSION_COLS}, ${p.sql} FROM resource_version v WHERE v.pk = ? AND v.version = ?`);
      q = { stmt, params: p.params };
      this.patientQueries.set(key, q);
    }
    const { stmt, params } = q;
    return rows.map((m) => {
      const row = stmt.get(...params, m.pk, m.version) as VersionRow & { patients: string | null };
      const v = this.toVersion(row);
      v.patients = patientIds(row.patients);
      return v;
    });
  }

  async patientsOf(resourceType: string, ids: string[], params: string[]): Promise<Map<string, string[]>> {
    const out = new Map<string, string[]>();
    if (ids.length === 0 || params.length === 0) return out;
    if (resourceType === 'AuditEvent') return this.trail.patientsOf(ids);
    // One id (the AuditEvent of every read asks): an equality on the (type, id) key, not json_each.
    const one = ids.length === 1;
    const key = `${resourceType}\0${params.join(',')}\0${one ? 1 : 'n'}`;
    let q = this.patientQueries.get(key);
    if (!q) {
      const p = referenceParamSql(resourceType, params, 'r.param');
      const stmt = this.db.prepare(`SELECT c.id AS id, r.target_id AS patient FROM resource_current c JOIN ${indexTable('reference')} r ON r.res = c.pk
        WHERE c.type = ? AND ${one ? 'c.id = ?' : 'c.id IN (SELECT value FROM json_each(?))'} AND ${p.sql} AND r.target_type = 'Patient'`);
      q = { stmt, params: p.params };
      this.patientQueries.set(key, q);
    }
    const rows = q.stmt.all(resourceType, one ? ids[0] : JSON.stringify(ids), ...q.params) as Array<{ id: string; patient: string }>;
    for (const r of rows) {
      const list = out.get(r.id) ?? [];
      if (!list.includes(r.patient)) list.push(r.patient);
      out.set(r.id, list);
    }
    return out;
  }

  async referencing(resourceType: string, param: string, targets: string[], limit: number): Promise<StoredVersion[]> {
    if (targets.length === 0) return [];
    if (resourceType === 'AuditEvent') return this.trail.referencing(param, targets, limit);
    const pairs = targets.map((t) => t.split('/'));
    // '*': every reference parameter of the type, so that the (param, target) index still applies.
    const params = param === '*' ? referenceParams(resourceType) : [param];
    if (params.length === 0) return [];
    const p = referenceParamSql(resourceType, params, 'r.param');
    const sql = `SELECT ${VERSION_COLS} FROM resource_current c JOIN resource_version v ON v.pk = c.pk AND v.version = c.version
      WHERE c.type = ? AND c.deleted = 0 AND c.pk IN (SELECT r.res FROM ${indexTable('reference')} r WHERE ${p.sql} AND (r.target_id, r.target_type) IN (VALUES ${pairs.map(() => '(?, ?)').join(', ')}))
      ORDER BY c.pk LIMIT ?`;
    const args: unknown[] = [resourceType, ...p.params, ...pairs.flatMap((p) => [p[1], p[0]]), limit];
    const rows = this.db.prepare(sql).all(...args) as VersionRow[];
    return rows.map((r) => this.toVersion(r));
  }

  async referencedBy(sources: string[], param: string, targetType: string | undefined, limit: number): Promise<StoredVersion[]> {
    if (sources.length === 0) return [];
    // AuditEvent sources name their targets in the journal; the targets themselves are resources.
    const auditIds = sources.filter((s) => s.startsWith('AuditEvent/')).map((s) => s.slice('AuditEvent/'.length));
    const auditTargets = auditIds.length ? this.trail.targets(auditIds, param, targetType) : [];
    const others = sources.filter((s) => !s.startsWith('AuditEvent/'));
    const parts: string[] = [];
    const args: unknown[] = [];
    if (others.length) {
      const pairs = others.map((s) => s.split('/'));
      const conds: string[] = ['r.target_type IS NOT NULL', `(s.type, s.id) IN (VALUES ${pairs.map(() => '(?, ?)').join(', ')})`];
      args.push(...pairs.flatMap((p) => [p[0], p[1]]));
      if (param !== '*') {
        // The param is one source type's (the _include names it); an alias reads its base's rows.
        const types = [...new Set(pairs.map((p) => p[0]!))];
        const byType = types.map((t) => {
          const p = referenceParamSql(t, [param], '+r.param');
          return { sql: types.length === 1 ? p.sql : `(s.type = ? AND ${p.sql})`, params: types.length === 1 ? p.params : [t, ...p.params] };
        });
        conds.push(`(${byType.map((b) => b.sql).join(' OR ')})`);
        args.push(...byType.flatMap((b) => b.params));
      }
      if (targetType) { conds.push('+r.target_type = ?'); args.push(targetType); }
      parts.push(`SELECT r.target_type, r.target_id FROM idx_reference r JOIN resource_current s ON s.pk = r.res WHERE ${conds.join(' AND ')}`);
    }
    if (auditTargets.length) {
      const pairs = [...new Set(auditTargets)].map((t) => t.split('/'));
      parts.push(`VALUES ${pairs.map(() => '(?, ?)').join(', ')}`);
      args.push(...pairs.flatMap((p) => [p[0], p[1]]));
    }
    if (parts.length === 0) return [];
    const sql = `SELECT ${VERSION_COLS} FROM resource_current c JOIN resource_version v ON v.pk = c.pk AND v.version = c.version
      WHERE c.deleted = 0 AND (c.type, c.id) IN (${parts.join(' UNION ')})
      ORDER BY c.pk LIMIT ?`;
    const rows = this.db.prepare(sql).all(...args, limit) as VersionRow[];
    return rows.map((r) => this.toVersion(r));
  }
}

interface StoreContext {
  keys: DataKeyCache;
  blinder: Blinder;
  indexer: ReturnType<typeof createIndexer>;
  hooks: VersionWriteHook[];
}

class SqliteWriter extends SqliteReader implements StoreTransaction {
  private readonly indexRows = new IndexRowWriter(this.db);

  appendAuditEvents(events: AuditEvent[]): void {
    if (events.length === 0) return;
    const entries = events.map((e) => journalEntry(e, this.ctx.blinder));
    // One key for the whole trail: AuditEvents name resources but hold no PHI, and they must outlive a patient's crypto-shredding.
    this.journal.append(entries, this.ctx.keys.forWrite('audit', this.keyRows()));
  }

  nextSequence(name: string, count = 1): number {
    if (!Number.isInteger(count) || count < 1) throw new Error(`a sequence advances by a positive whole number, not ${count}`);
    const last = this.stmt('INSERT INTO sequence (name, n) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET n = n + excluded.n RETURNING n').pluck().get(name, count) as number;
    return last - count + 1;
  }

  async write(input: WriteInput): Promise<StoredVersion> {
    const { resourceType, id } = input;
    const cur = input.fresh ? undefined : this.stmt('SELECT pk, version, last_updated, deleted FROM resource_current WHERE type = ? AND id = ?')
      .get(resourceType, id) as { pk: number; version: number; last_updated: number; deleted: number } | undefined;
    if (input.ifMatch !== undefined && cur?.version !== input.ifMatch) {
      throw new VersionConflictError(resourceType, id, input.ifMatch, cur?.version);
    }
    const version = (cur?.version ?? 0) + 1;
    // Strictly increasing per resource even if the clock steps back.
    const now = Math.max(Date.now(), (cur?.last_updated ?? 0) + 1);
    const lastUpdated = new Date(now).toISOString();
    const deleted = input.resource === undefined;

    let body: Buffer | null = null;
    let keyId: number | null = null;
    let hash: string;
    let index: IndexRows | undefined;
    let resource: Resource | undefined;
    if (!deleted) {
      resource = { ...input.resource!, id, meta: { ...input.resource!.meta, versionId: String(version), lastUpdated } } as Resource;
      index = input.index ?? this.ctx.indexer.extract(resource);
      const dk = this.ctx.keys.forWrite(keyScopeOf(resource, index), this.keyRows());
      keyId = dk.keyId;
      const json = JSON.stringify(resource);
      body = seal(dk.key, Buffer.from(json, 'utf8'), bodyAad(resourceType, id, version));
      hash = contentHash(resource);
    } else {
      hash = contentHash({ resourceType, id, meta: { versionId: String(version), lastUpdated }, deleted: true });
    }

    let pk: number;
    if (cur) {
      pk = cur.pk;
      this.stmt('UPDATE resource_current SET version = ?, last_updated = ?, deleted = ? WHERE pk = ?').run(version, now, deleted ? 1 : 0, pk);
      this.indexRows.remove(pk, cur.deleted ? undefined : resourceType);
    } else {
      pk = Number(this.stmt('INSERT INTO resource_current (type, id, version, last_updated, deleted) VALUES (?, ?, ?, ?, ?)')
        .run(resourceType, id, version, now, deleted ? 1 : 0).lastInsertRowid);
    }
    this.stmt('INSERT INTO resource_version (pk, type, id, version, last_updated, deleted, key_id, body, content_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)')
      .run(pk, resourceType, id, version, now, deleted ? 1 : 0, keyId, body, hash);
    if (index) this.indexRows.insert(pk, resourceType, index);

    const stored: StoredVersion = { resourceType, id, versionId: version, lastUpdated, deleted, resource, contentHash: hash };
    for (const hook of this.ctx.hooks) await hook(this, stored);
    return stored;
  }
}

/**
 * A column with the ids of the Patients the resource `res` references through `via` (its current
 * index rows), space-separated (ids have no spaces); read by patientIds.
 */
function patientsColumn(resourceType: string, via: string[], res: string): { sql: string; params: unknown[] } {
  const p = referenceParamSql(resourceType, via, 'r.param');
  return { sql: `(SELECT group_concat(r.target_id, ' ') FROM ${indexTable('reference')} r WHERE r.res = ${res} AND ${p.sql} AND r.target_type = 'Patient') AS patients`, params: p.params };
}

function patientIds(column: string | null): string[] {
  return column ? [...new Set(column.split(' '))] : [];
}

function referenceParams(resourceType: string): string[] {
  return Object.entries(getTypeSearchParameters(resourceType)).filter(([, sp]) => sp.type === 'reference').map(([code]) => code);
}

/** Bodies are encrypted under the data key of the patient whose compartment they are in. */
function keyScopeOf(resource: Resource, index: IndexRows): string {
  if (resource.resourceType === 'Patient') return `patient:${resource.id}`;
  const params = getPatientCompartmentParams(resource.resourceType);
  if (params.length === 0) return 'shared';
  const ref = index.reference.find((r) => r.targetType === 'Patient' && r.targetId && params.includes(r.param));
  return ref ? `patient:${ref.targetId}` : 'shared';
}

/**
 * Refuses a database written with another schema (before anything is created in it), except one
 * the writer upgrades (`upgradable`): returns its version then, undefined for a current or new one.
 */
function checkSchemaVersion(db: Database.Database, file: string, upgradable: ReadonlySet<number>): number | undefined {
  const hasMeta = db.prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'meta'").get() !== undefined;
  const v = hasMeta ? db.prepare("SELECT value FROM meta WHERE key = 'schema_version'").pluck().get() as string | undefined : undefined;
  const hasTables = db.prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'resource_version'").get() !== undefined;
  if (v === undefined && !hasTables) return undefined;
  if (Number(v) === SCHEMA_VERSION) return undefined;
  if (upgradable.has(Number(v))) return Number(v);
  const how = UPGRADABLE_VERSIONS.has(Number(v))
    ? 'start the server (custos serve) once to upgrade it'
    : `it upgrades version ${[...UPGRADABLE_VERSIONS].join(', ')} only: start with an empty data directory`;
  throw new Error(`${file} has database schema version ${v ?? 'unknown'}, but this server reads version ${SCHEMA_VERSION} only; ${how}`);
}

/** Columns of each index table after (res, n), in table order, as the integrity scan compares them. */
const INDEX_COLUMNS: Record<IndexKind, string> = {
  token: 'param, system, code, dlo',
  string: 'param, value, exact',
  date: 'param, lo, hi, wide',
  number: 'param, value, lo, hi',
  quantity: 'param, system, code, unit, value, lo, hi',
  reference: 'param, target_type, target_id, url, dlo, flags',
  uri: 'param, value',
};

type IndexValue = string | number | null;

/**
 * Read-only access for integrity scans: versions in seq order decrypted one by one (a failure is
 * reported per version, by kind, never with content), the stored index rows of current versions
 * in the same snapshot, and the rows the writer would store for a resource now.
 */
class SqliteIntegrityReader extends SqliteReader implements IntegrityReader {
  private readonly batchReader: SqliteLedgerStore;

  constructor(db: Database.Database, ctx: StoreContext) {
    super(db, ctx);
    // Only its SELECTs are used; on a read-only connection the others could not run anyway.
    this.batchReader = new SqliteLedgerStore(db);
  }

  sequenceValue(name: string): number {
    return (this.stmt('SELECT n FROM sequence WHERE name = ?').pluck().get(name) as number | undefined) ?? 0;
  }

  versionExtent(): { count: number; maxSeq: number } {
    const r = this.stmt('SELECT count(*) AS count, coalesce(max(seq), 0) AS maxSeq FROM resource_version').get() as { count: number; maxSeq: number };
    return { count: r.count, maxSeq: r.maxSeq };
  }

  scanVersions(afterSeq: number, untilSeq: number, limit: number): ScannedVersion[] {
    const page = this.db.transaction(() => {
      const rows = this.stmt(`SELECT v.seq, v.pk, ${VERSION_COLS}, (c.version IS NOT NULL AND c.version = v.version) AS current
        FROM resource_version v LEFT JOIN resource_current c ON c.pk = v.pk WHERE v.seq > ? AND v.seq <= ? ORDER BY v.seq LIMIT ?`)
        .all(afterSeq, untilSeq, limit) as Array<VersionRow & { seq: number; pk: number; current: number }>;
      return rows.map((r): ScannedVersion => {
        const out: ScannedVersion = {
          seq: r.seq, resourceType: r.type, id: r.id, versionId: r.version, lastUpdated: new Date(r.last_updated).toISOString(),
          deleted: r.deleted === 1, contentHash: r.content_hash, current: r.current === 1,
        };
        const read = this.decrypt(r);
        if (typeof read === 'string') out.error = read;
        else out.version = { resourceType: r.type, id: r.id, versionId: r.version, lastUpdated: out.lastUpdated, deleted: out.deleted, contentHash: r.content_hash, ...(read ? { resource: read } : {}) };
        if (out.current) out.indexRows = this.storedIndexRows(r.pk, r.type);
        return out;
      });
    });
    return page();
  }

  scanAuditJournal(afterSeq: number, limit: number): ScannedVersion[] {
    const read = this.db.transaction(() => {
      const rows = this.stmt(`SELECT e.seq, e.recorded, e.last_updated, e.action, e.outcome, e.type_system, e.type_code, e.sub1_system, e.sub1_code, e.sub2_system, e.sub2_code,
        e.client, e.content_hash, b.id AS batch, b.first_seq, b.key_id, b.body FROM audit_event e LEFT JOIN audit_batch b ON b.id = e.batch WHERE e.seq > ? ORDER BY e.seq LIMIT ?`)
        .all(afterSeq, limit) as Array<{ seq: number; recorded: number; last_updated: number; action: string | null; outcome: string | null; type_system: string | null; type_code: string | null;
          sub1_system: string | null; sub1_code: string | null; sub2_system: string | null; sub2_code: string | null; client: string | null; content_hash: string;
          batch: number | null; first_seq: number | null; key_id: number | null; body: Buffer | null }>;
      const keys = new Map<number, Map<string, number>>();
      for (const k of this.journal.keysOf(rows.map((r) => r.seq))) {
        const m = keys.get(k.seq) ?? new Map<string, number>();
        m.set(k.value, k.flags);
        keys.set(k.seq, m);
      }
      const batches = new Map<number, string[] | string>();
      return rows.map((r): ScannedVersion => {
        const { id, lastUpdated } = auditVersion(r.seq, r.last_updated, r.content_hash);
        const out: ScannedVersion = {
          seq: r.seq, resourceType: 'AuditEvent', id, versionId: 1, lastUpdated, deleted: false, contentHash: r.content_hash, current: true,
          indexRows: journalRowTuples({
            recorded: r.recorded, lastUpdated: r.last_updated, action: r.action, outcome: r.outcome, typeSystem: r.type_system, typeCode: r.type_code,
            subtypes: [...(r.sub1_code !== null ? [{ system: r.sub1_system, code: r.sub1_code }] : []), ...(r.sub2_code !== null ? [{ system: r.sub2_system, code: r.sub2_code }] : [])],
            client: r.client, keys: keys.get(r.seq) ?? new Map(),
          }),
        };
        let lines = r.batch === null ? 'its batch is missing' : batches.get(r.batch);
        if (lines === undefined) {
          try {
            const key = this.ctx.keys.forRead(r.key_id!, this.keyRows());
            lines = key ? open(key, r.body!, batchAad(r.first_seq!)).toString('utf8').split('\n') : `data key ${r.key_id} is missing`;
          } catch {
            lines = 'its batch fails AES-GCM authentication (ciphertext, nonce, tag or data key changed)';
          }
          batches.set(r.batch!, lines);
        }
        const json = typeof lines === 'string' ? undefined : lines[r.seq - r.first_seq!];
        if (typeof lines === 'string') out.error = lines;
        else if (json === undefined) out.error = 'its batch holds no line for it';
        else {
          try {
            out.version = auditVersion(r.seq, r.last_updated, r.content_hash, JSON.parse(json) as Resource);
          } catch {
            out.error = 'its line in the batch is not JSON';
          }
        }
        return out;
      });
    });
    return read();
  }

  currentPointers(afterPk: number, limit: number): Array<{ pk: number; resourceType: string; id: string; versionId: number; stored: boolean }> {
    const rows = this.stmt(`SELECT c.pk, c.type, c.id, c.version, EXISTS (SELECT 1 FROM resource_version v WHERE v.pk = c.pk AND v.version = c.version) AS stored
      FROM resource_current c WHERE c.pk > ? ORDER BY c.pk LIMIT ?`).all(afterPk, limit) as Array<{ pk: number; type: string; id: string; version: number; stored: number }>;
    return rows.map((r) => ({ pk: r.pk, resourceType: r.type, id: r.id, versionId: r.version, stored: r.stored === 1 }));
  }

  /** The decrypted body (undefined for a delete marker), or why it cannot be read (never its content). */
  private decrypt(r: VersionRow): Resource | undefined | string {
    if (r.deleted === 1) return r.body === null ? undefined : 'a delete marker carries a body';
    if (r.body === null || r.key_id === null) return 'the body or its data key reference is missing';
    let key: Buffer | undefined;
    try {
      key = this.ctx.keys.forRead(r.key_id, this.keyRows());
    } catch {
      return `data key ${r.key_id} cannot be unwrapped with the master key`;
    }
    if (!key) return `data key ${r.key_id} is missing (crypto-shredded or deleted)`;
    let plain: Buffer;
    try {
      plain = open(key, r.body, bodyAad(r.type, r.id, r.version));
    } catch {
      return 'the body fails AES-GCM authentication (ciphertext, nonce, tag or data key changed)';
    }
    try {
      const resource = JSON.parse(plain.toString('utf8')) as Resource;
      if (resource && typeof resource === 'object' && !Array.isArray(resource)) return resource;
    } catch { /* below */ }
    return 'the decrypted body is not a JSON object';
  }

  private storedIndexRows(pk: number, resourceType: string): IndexRowTuple[] {
    const out: IndexRowTuple[] = [];
    for (const table of INDEX_KINDS) {
      const rows = this.stmt(`SELECT ${INDEX_COLUMNS[table]} FROM ${indexTable(table)} WHERE res = ?`).raw().all(pk) as IndexValue[][];
      for (const [param, ...values] of rows) out.push({ table, param: String(param), values });
    }
    return out;
  }

  derivedIndexRows(resource: Resource): IndexRowTuple[] {
    if (resource.resourceType === 'AuditEvent') return journalRowTuples(journalEntry(resource as AuditEvent, this.ctx.blinder));
    const idx = this.ctx.indexer.extract(resource);
    // As IndexRowWriter.insert stores them.
    const dlo = primaryDateLo(idx);
    const out: IndexRowTuple[] = [];
    const add = (table: string, param: string, ...values: IndexValue[]) => out.push({ table, param, values });
    for (const r of idx.token) add('token', r.param, r.system, r.code, dlo);
    for (const r of idx.string) add('string', r.param, r.value, r.exact);
    for (const r of idx.date) add('date', r.param, r.lo, r.hi, r.hi - r.lo > NARROW_SPAN ? 1 : 0);
    for (const r of idx.number) add('number', r.param, r.value, r.lo, r.hi);
    for (const r of idx.quantity) add('quantity', r.param, r.system, r.code, r.unit, r.value, r.lo, r.hi);
    for (const r of storedReferenceRows(resource.resourceType, idx.reference)) add('reference', r.param, r.targetType, r.targetId, r.url, dlo, r.flags);
    for (const r of idx.uri) add('uri', r.param, r.value);
    return out;
  }

  batches(afterId: number, limit: number): LedgerBatch[] {
    return this.batchReader.batchesAfter(afterId, limit);
  }

  leaves(batch: LedgerBatch): LedgerLeaf[] {
    return this.batchReader.leaves(batch);
  }
}

/** A read-only connection with its own key cache, e.g. for a search worker thread or an integrity scan. */
export function openSqliteReader(opts: { file: string; keys: MasterKeys }): StoreReader & { close(): void; integrity(): IntegrityReader; ledger(): Pick<LedgerStore, 'position' | 'leaves'> } {
  const db = openDb(opts.file, true);
  try {
    checkSchemaVersion(db, opts.file, new Set());
  } catch (err) {
    db.close();
    throw err;
  }
  const blinder = new Blinder(opts.keys.indexKey);
  const ctx: StoreContext = { keys: new DataKeyCache(opts.keys.kek), blinder, indexer: createIndexer(blinder), hooks: [] };
  const reader = new SqliteReader(db, ctx);
  let integrity: SqliteIntegrityReader | undefined;
  let ledger: SqliteLedgerStore | undefined;
  return Object.assign(reader, {
    close: () => db.close(),
    integrity: () => (integrity ??= new SqliteIntegrityReader(db, ctx)),
    // Only its SELECTs can run on this read-only connection.
    ledger: () => (ledger ??= new SqliteLedgerStore(db)),
  });
}

export class SqliteStore extends SqliteReader implements Store {
  private readonly writer: Database.Database;
  private readonly tx: SqliteWriter;
  private readonly queue: WriteQueue<SqliteWriter>;
  private checkpointer?: Worker;
  private readonly walFd: number;
  private ledgerStore?: { db: Database.Database; store: SqliteLedgerStore };
  private integrityReader?: SqliteIntegrityReader;
  private readonly file: string;
  private readonly serverTurns?: WriterTurns;
  /** What opening it upgraded, when the database had an older schema version (see migrate.ts). */
  upgraded?: MigrationReport;

  private constructor(reader: Database.Database, writer: Database.Database, ctx: StoreContext, file: string, turns?: SqliteStoreOptions['turns']) {
    super(reader, ctx);
    this.writer = writer;
    this.file = file;
    if (turns?.as === 'server') this.serverTurns = turns.shared;
    // The WAL file lives (same inode) as long as the writer connection is open.
    this.walFd = fs.openSync(`${file}-wal`, 'a', 0o600);
    this.tx = new SqliteWriter(writer, ctx);
    // Prepared once: transaction control runs several times per group commit.
    const exec = (sql: string) => {
      const stmt = writer.prepare(sql);
      return () => { stmt.run(); };
    };
    this.queue = new WriteQueue<SqliteWriter>({
      begin: exec('BEGIN IMMEDIATE'),
      commit: exec('COMMIT'),
      rollback: exec('ROLLBACK'),
      savepoint: exec('SAVEPOINT job'),
      release: exec('RELEASE job'),
      rollbackToSavepoint: exec('ROLLBACK TO job'),
      flush: () => new Promise<void>((resolve, reject) => fs.fdatasync(this.walFd, (err) => (err ? reject(err) : resolve()))),
      onJobAborted: () => ctx.keys.aborted(),
      onGroupCommitted: () => ctx.keys.committed(),
      ...(turns?.as === 'server' ? { beforeBegin: () => turns.shared.mainAcquire(), afterEnd: () => turns.shared.mainRelease() } : {}),
      ...(turns?.as === 'other' ? { beforeBegin: () => turns.shared.otherAcquire(), afterEnd: () => turns.shared.otherRelease() } : {}),
      tx: this.tx,
    });
  }

  ledger(): SqliteLedgerStore {
    if (!this.ledgerStore) {
      const db = openDb(this.file, false);
      db.pragma('synchronous = FULL');
      this.ledgerStore = { db, store: new SqliteLedgerStore(db) };
    }
    return this.ledgerStore.store;
  }

  async writeTurn<T>(fn: () => T): Promise<T> {
    return this.serverTurns ? this.serverTurns.mainTurn(fn) : fn();
  }

  integrity(): IntegrityReader {
    return (this.integrityReader ??= new SqliteIntegrityReader(this.db, this.ctx));
  }

  currentIds(resourceType: string): string[] {
    if (resourceType === 'AuditEvent') return this.trail.ids();
    return this.stmt('SELECT id FROM resource_current WHERE type = ? AND deleted = 0 ORDER BY pk').pluck().all(resourceType) as string[];
  }

  watchedChanges(): number {
    return this.stmt('SELECT total(n) FROM change_counter').pluck().get() as number;
  }

  /** Throws unless both connections are open and the database file answers a query (readiness). */
  ping(): void {
    if (!this.writer.open) throw new Error('the write connection is closed');
    this.stmt("SELECT value FROM meta WHERE key = 'schema_version'").pluck().get();
  }

  /** Writes waiting for their group commit to begin. */
  get writesWaiting(): number {
    return this.queue.waiting;
  }

  static open(opts: SqliteStoreOptions): SqliteStore {
    fs.mkdirSync(path.dirname(opts.file), { recursive: true, mode: 0o700 });
    makePrivate(opts.file);
    const writer = openDb(opts.file, false);
    const blinder = new Blinder(opts.keys.indexKey);
    let upgraded: MigrationReport | undefined;
    try {
      const from = checkSchemaVersion(writer, opts.file, UPGRADABLE_VERSIONS);
      writer.exec(SCHEMA);
      writer.prepare("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)").run(String(SCHEMA_VERSION));
      if (from !== undefined) upgraded = upgradeDatabase(writer, from, SCHEMA_VERSION, blinder);
    } catch (err) {
      writer.close();
      throw err;
    }
    const reader = openDb(opts.file, true);
    const ctx: StoreContext = {
      keys: new DataKeyCache(opts.keys.kek),
      blinder,
      indexer: createIndexer(blinder),
      hooks: opts.hooks ?? [],
    };
    const s = new SqliteStore(reader, writer, ctx, opts.file, opts.turns);
    s.upgraded = upgraded;
    if (opts.noCheckpoints) writer.pragma('wal_autocheckpoint = 0');
    else if (opts.backgroundCheckpoint !== false) s.startCheckpointer(opts.file);
    return s;
  }

  /**
   * The worker copies WAL frames into the database file between commits; the writer keeps its own
   * autocheckpoint, which then finds little left to copy and is what lets the WAL restart from
   * the beginning (a PASSIVE checkpoint in another connection never races a busy writer to that).
   */
  private startCheckpointer(file: string): void {
    // 16 MiB of WAL before the writer checkpoints itself; the worker keeps it mostly copied.
    this.writer.pragma('wal_autocheckpoint = 4000');
    const worker = startWorker(new URL('./checkpointer.js', import.meta.url), { file, intervalMs: 250 });
    worker.unref();
    worker.on('error', () => undefined);
    worker.on('exit', () => {
      if (this.checkpointer === worker) this.checkpointer = undefined;
    });
    this.checkpointer = worker;
  }

  private async stopCheckpointer(): Promise<void> {
    const worker = this.checkpointer;
    if (!worker) return;
    this.checkpointer = undefined;
    await new Promise<void>((resolve) => {
      const done = () => resolve();
      worker.once('message', (m) => { if (m === 'stopped') done(); });
      worker.once('exit', done);
      // Keep the process alive until the final checkpoint is done.
      worker.ref();
      worker.postMessage('stop');
      setTimeout(() => { void worker.terminate().then(done); }, 5000).unref();
    });
    await worker.terminate();
  }

  transaction<T>(fn: (tx: StoreTransaction) => Promise<T>): Promise<T> {
    return this.queue.run(fn);
  }

  async close(): Promise<void> {
    while (!this.queue.idle) await new Promise((r) => setTimeout(r, 5));
    await this.stopCheckpointer();
    // Let the last flushes finish before the descriptor goes.
    await new Promise<void>((resolve) => fs.fdatasync(this.walFd, () => resolve()));
    fs.closeSync(this.walFd);
    this.ledgerStore?.db.close();
    this.db.close();
    this.writer.close();
  }
}
