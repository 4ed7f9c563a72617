import type Database from 'better-sqlite3';
import { ALIAS_ROW, ANY_ROW, OWN_ROW, referenceAliases } from '../reference-aliases.js';
import type { IndexRows, ReferenceRow } from '../types.js';
import { NARROW_SPAN, PRIMARY_DATE_PARAM } from './search.js';

export const INDEX_TABLES = ['token', 'string', 'date', 'number', 'quantity', 'reference', 'uri'] as const;

/**
 * Writes and removes the search-index rows of one resource (resource_current.pk). Each table is
 * clustered on (res, n), n numbering the resource's rows in that table.
 */
export class IndexRowWriter {
  private readonly insertRow: { [K in (typeof INDEX_TABLES)[number]]: Database.Statement };
  private readonly deleteRows: Database.Statement[];

  constructor(db: Database.Database) {
    this.insertRow = {
      token: db.prepare('INSERT INTO idx_token (res, n, param, system, code, dlo) VALUES (?, ?, ?, ?, ?, ?)'),
      string: db.prepare('INSERT INTO idx_string (res, n, param, value, exact) VALUES (?, ?, ?, ?, ?)'),
      date: db.prepare('INSERT INTO idx_date (res, n, param, lo, hi, wide) VALUES (?, ?, ?, ?, ?, ?)'),
      number: db.prepare('INSERT INTO idx_number (res, n, param, value, lo, hi) VALUES (?, ?, ?, ?, ?, ?)'),
      quantity: db.prepare('INSERT INTO idx_quantity (res, n, param, system, code, unit, value, lo, hi) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)'),
      reference: db.prepare('INSERT INTO idx_reference (res, n, param, target_type, target_id, url, dlo, flags) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'),
      uri: db.prepare('INSERT INTO idx_uri (res, n, param, value) VALUES (?, ?, ?, ?)'),
    };
    this.deleteRows = INDEX_TABLES.map((t) => db.prepare(`DELETE FROM idx_${t} WHERE res = ?`));
  }

  insert(pk: number, resourceType: string, idx: IndexRows): void {
    const dlo = primaryDateLo(idx);
    const s = this.insertRow;
    idx.token.forEach((r, n) => s.token.run(pk, n, r.param, r.system, r.code, dlo));
    idx.string.forEach((r, n) => s.string.run(pk, n, r.param, r.value, r.exact));
    idx.date.forEach((r, n) => s.date.run(pk, n, r.param, r.lo, r.hi, r.hi - r.lo > NARROW_SPAN ? 1 : 0));
    idx.number.forEach((r, n) => s.number.run(pk, n, r.param, r.value, r.lo, r.hi));
    idx.quantity.forEach((r, n) => s.quantity.run(pk, n, r.param, r.system, r.code, r.unit, r.value, r.lo, r.hi));
    storedReferenceRows(resourceType, idx.reference).forEach((r, n) => s.reference.run(pk, n, r.param, r.targetType, r.targetId, r.url, dlo, r.flags));
    idx.uri.forEach((r, n) => s.uri.run(pk, n, r.param, r.value));
  }

  remove(pk: number): void {
    for (const s of this.deleteRows) s.run(pk);
  }
}

/** Rows of an alias parameter (see reference-aliases) merged into those of the one it filters. */
export function storedReferenceRows(resourceType: string, rows: ReferenceRow[]): Array<ReferenceRow & { flags: number }> {
  const aliases = referenceAliases(resourceType);
  if (aliases.size === 0) return rows.map((r) => ({ ...r, flags: ANY_ROW }));
  const bases = new Set(aliases.values());
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
    const base = aliases.get(r.param);
    if (base === undefined) continue;
    const same = byKey.get(key(base, r));
    if (same) same.flags |= ALIAS_ROW;
    else out.push({ ...r, param: base, flags: ALIAS_ROW });
  }
  return out;
}

/** The lo of the resource's 'date' when it has exactly one narrow one (see idx_token.dlo). */
export function primaryDateLo(idx: IndexRows): number | null {
  const dates = idx.date.filter((d) => d.param === PRIMARY_DATE_PARAM);
  return dates.length === 1 && dates[0]!.hi - dates[0]!.lo <= NARROW_SPAN ? dates[0]!.lo : null;
}
