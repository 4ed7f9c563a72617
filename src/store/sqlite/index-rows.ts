import type Database from 'better-sqlite3';
import { ALIAS_ROW, ANY_ROW, OWN_ROW, referenceAliases } from '../reference-aliases.js';
import type { IndexRows, ReferenceRow, TextEntry } from '../types.js';
import { INDEX_KINDS, indexTable, type IndexKind } from './index-tables.js';
import { NARROW_SPAN, PRIMARY_DATE_PARAM } from './search.js';

/**
 * Writes and removes the search-index rows of one resource (resource_current.pk). Each table is
 * clustered on (res, n), n numbering the resource's rows in that table.
 */
/** A search_stats key: ('token', param, system, code), ('reference', param, type, id) or ('type', type, '', ''). */
export type StatsKey = [kind: string, a: string, b: string, c: string];

/**
 * Fills search_stats from the index tables (a database from before it was kept): one pass over
 * the token and reference keys and the current resources. Runs in the caller's transaction.
 */
export function countSearchStats(db: Database.Database): number {
  db.prepare('DELETE FROM search_stats').run();
  return db.prepare(`INSERT INTO search_stats (kind, a, b, c, n)
    SELECT 'token', param, system, code, count(*) FROM ${indexTable('token')} WHERE system IS NOT NULL AND code IS NOT NULL GROUP BY param, system, code
    UNION ALL SELECT 'reference', param, target_type, target_id, count(*) FROM ${indexTable('reference')} WHERE target_type IS NOT NULL AND target_id IS NOT NULL GROUP BY param, target_type, target_id
    UNION ALL SELECT 'type', type, '', '', count(*) FROM resource_current WHERE deleted = 0 GROUP BY type`).run().changes;
}

/** Columns of each index table after (res, n), in insert order. */
const COLUMNS: { [K in IndexKind]: readonly string[] } = {
  token: ['param', 'system', 'code', 'dlo'],
  string: ['param', 'value', 'exact'],
  date: ['param', 'lo', 'hi', 'wide'],
  number: ['param', 'value', 'lo', 'hi'],
  quantity: ['param', 'system', 'code', 'unit', 'value', 'lo', 'hi'],
  reference: ['param', 'target_type', 'target_id', 'url', 'dlo', 'flags'],
  uri: ['param', 'value'],
};

/** Rows per INSERT statement at most (a resource rarely has more in one table). */
const MAX_ROWS_PER_INSERT = 32;

export class IndexRowWriter {
  /** INSERT statements by table and row count: one statement per table per resource, not one per row. */
  private readonly inserts = new Map<string, Database.Statement>();
  private readonly deleteRows: Database.Statement[];
  private readonly hasText: Database.Statement;
  private readonly insertPrefix: Database.Statement;
  private readonly countKey: Database.Statement;
  private readonly exactKeys: Database.Statement;

  constructor(private readonly db: Database.Database) {
    this.deleteRows = INDEX_KINDS.map((k) => db.prepare(`DELETE FROM ${indexTable(k)} WHERE res = ?`));
    this.hasText = db.prepare('SELECT 1 FROM text_prefix WHERE prefix = ? AND text = ?').pluck();
    this.insertPrefix = db.prepare('INSERT OR IGNORE INTO text_prefix (prefix, text) VALUES (?, ?)');
    this.countKey = db.prepare('INSERT INTO search_stats (kind, a, b, c, n) VALUES (?, ?, ?, ?, ?) ON CONFLICT (kind, a, b, c) DO UPDATE SET n = n + excluded.n');
    this.exactKeys = db.prepare(`SELECT 'token', param, system, code FROM ${indexTable('token')} WHERE res = ? AND system IS NOT NULL AND code IS NOT NULL
      UNION ALL SELECT 'reference', param, target_type, target_id FROM ${indexTable('reference')} WHERE res = ? AND target_type IS NOT NULL AND target_id IS NOT NULL`).raw();
  }

  /** Stores a text's prefixes unless it is known: its longest prefix is written with the others, in one transaction. */
  addText(t: TextEntry): void {
    const longest = t.prefixes[t.prefixes.length - 1];
    if (longest === undefined || this.hasText.get(longest, t.value) !== undefined) return;
    for (const p of t.prefixes) this.insertPrefix.run(p, t.value);
  }

  insert(pk: number, resourceType: string, idx: IndexRows): void {
    const dlo = primaryDateLo(idx);
    this.rows('token', pk, idx.token.map((r) => [r.param, r.system, r.code, dlo]));
    this.rows('string', pk, idx.string.map((r) => [r.param, r.value, r.exact]));
    this.rows('date', pk, idx.date.map((r) => [r.param, r.lo, r.hi, r.hi - r.lo > NARROW_SPAN ? 1 : 0]));
    this.rows('number', pk, idx.number.map((r) => [r.param, r.value, r.lo, r.hi]));
    this.rows('quantity', pk, idx.quantity.map((r) => [r.param, r.system, r.code, r.unit, r.value, r.lo, r.hi]));
    const references = storedReferenceRows(resourceType, idx.reference);
    this.rows('reference', pk, references.map((r) => [r.param, r.targetType, r.targetId, r.url, dlo, r.flags]));
    this.rows('uri', pk, idx.uri.map((r) => [r.param, r.value]));
    for (const t of idx.texts ?? []) this.addText(t);
    this.count(1, [
      ['type', resourceType, '', ''],
      ...idx.token.flatMap((r): StatsKey[] => (r.system !== null && r.code !== null ? [['token', r.param, r.system, r.code]] : [])),
      ...references.flatMap((r): StatsKey[] => (r.targetType !== null && r.targetId !== null ? [['reference', r.param, r.targetType, r.targetId]] : [])),
    ]);
  }

  /** Removes a resource's rows; `resourceType` when they described a current resource (not a deleted one). */
  remove(pk: number, resourceType: string | undefined): void {
    const keys = this.keysOf(pk);
    this.count(-1, resourceType === undefined ? keys : [['type', resourceType, '', ''], ...keys]);
    for (const s of this.deleteRows) s.run(pk);
  }

  /** The resource's exact token and reference keys, as search_stats keys (read back from its rows). */
  private keysOf(pk: number): StatsKey[] {
    return this.exactKeys.all(pk, pk) as StatsKey[];
  }

  private count(delta: number, keys: StatsKey[]): void {
    for (const [kind, a, b, c] of keys) this.countKey.run(kind, a, b, c, delta);
  }

  private rows(kind: IndexKind, pk: number, rows: unknown[][]): void {
    for (let first = 0; first < rows.length; first += MAX_ROWS_PER_INSERT) {
      const chunk = rows.slice(first, first + MAX_ROWS_PER_INSERT);
      const params: unknown[] = [];
      chunk.forEach((r, i) => params.push(pk, first + i, ...r));
      this.statement(indexTable(kind), kind, chunk.length).run(params);
    }
  }

  private statement(table: string, kind: IndexKind, count: number): Database.Statement {
    const key = `${table}/${count}`;
    let s = this.inserts.get(key);
    if (!s) {
      const cols = COLUMNS[kind];
      const tuple = `(${Array(cols.length + 2).fill('?').join(', ')})`;
      s = this.db.prepare(`INSERT INTO ${table} (res, n, ${cols.join(', ')}) VALUES ${Array(count).fill(tuple).join(', ')}`);
      this.inserts.set(key, s);
    }
    return s;
  }
}

/** Rows of an alias parameter (see reference-aliases) merged into those of the one it filters. */
export function storedReferenceRows(resourceType: string, rows: ReferenceRow[]): Array<ReferenceRow & { flags: number }> {
  const aliases = referenceAliases(resourceType);
  if (aliases.size === 0) return rows.map((r) => ({ ...r, flags: ANY_ROW }));
  const bases = aliasBases(resourceType, aliases);
  const out: Array<ReferenceRow & { flags: number }> = [];
  const byKey = new Map<string, ReferenceRow & { flags: number }>();
  const key = (param: string, r: ReferenceRow) => `${param}\0${r.targetType}\0${r.targetId}\0${r.url}`;
  for (const r of rows) {
    if (aliases.has(r.param)) continue;
    const row = { ...r, flags: bases.has(r.param) ? OWN_ROW : ANY_ROW };
    out.push(row);
    if (bases.has(r.param)) byKey.set(key(r.param, r), row);
  }
  for (const r of rows) {
    const own = aliases.get(r.param);
    if (own === undefined) continue;
    const same = own.map((base) => byKey.get(key(base, r))).find((x) => x !== undefined);
    if (same) same.flags |= ALIAS_ROW;
    else out.push({ ...r, param: own[0]!, flags: ALIAS_ROW });
  }
  return out;
}

const basesByType = new Map<string, Set<string>>();

/** The parameters a type's aliases are stored under. */
function aliasBases(resourceType: string, aliases: Map<string, string[]>): Set<string> {
  let bases = basesByType.get(resourceType);
  if (!bases) {
    bases = new Set([...aliases.values()].flat());
    basesByType.set(resourceType, bases);
  }
  return bases;
}

/** The lo of the resource's 'date' when it has exactly one narrow one (see idx_token.dlo). */
export function primaryDateLo(idx: IndexRows): number | null {
  const dates = idx.date.filter((d) => d.param === PRIMARY_DATE_PARAM);
  return dates.length === 1 && dates[0]!.hi - dates[0]!.lo <= NARROW_SPAN ? dates[0]!.lo : null;
}
