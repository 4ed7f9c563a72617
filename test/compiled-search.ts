import type Database from 'better-sqlite3';
import { pageRows, type CompiledSearch } from '../src/store/sqlite/search-plan.js';

/** The ids of a compiled search's page, run as the store runs it (arms merged). */
export function compiledIds(db: Database.Database, c: CompiledSearch, limit: number, offset = 0): string[] {
  const rows = pageRows((sql, params) => db.prepare(sql).all(...params) as Array<{ pk: number; version: number }>, c, limit, offset);
  const id = db.prepare('SELECT id FROM resource_current WHERE pk = ?').pluck();
  return rows.map((r) => id.get(r.pk) as string);
}
