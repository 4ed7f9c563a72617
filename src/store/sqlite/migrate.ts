import type Database from 'better-sqlite3';
import type { Blinder } from '../blind.js';
import { isStringBlindedType } from '../blinding-policy.js';
import { countSearchStats, IndexRowWriter } from './index-rows.js';

/** Schema versions SqliteStore.open upgrades in place (to SCHEMA_VERSION); any other is refused. */
export const UPGRADABLE_VERSIONS: ReadonlySet<number> = new Set([7, 8]);

const PAGE_RESOURCES = 10_000;

export interface MigrationReport {
  from: number;
  /** Resources whose clear `:text` rows were replaced by blinded ones. */
  resources: number;
  /** Clear rows removed. */
  clearRows: number;
}

/**
 * v7 -> v8: the `<token>:text` rows of patient data (CodeableConcept.text, Coding.display) were
 * stored in the clear ("bob depression"); v8 stores a blinded text per row and its prefixes in
 * text_prefix, as the indexer now does. The clear row holds the text as written (`exact`), so the
 * blinded row is derived from it without decrypting any body. Runs in the caller's transaction.
 */
export function migrateTextRows(db: Database.Database, blinder: Blinder): Omit<MigrationReport, 'from'> {
  // By ranges of resources, so that memory does not grow with the database.
  const page = db.prepare(`SELECT s.res, s.n, s.param, s.exact, c.type FROM idx_string s JOIN resource_current c ON c.pk = s.res
    WHERE s.res >= ? AND s.res < ? AND s.exact IS NOT NULL AND s.param LIKE '%:text' ORDER BY s.res, s.n`);
  const maxPk = (db.prepare('SELECT coalesce(max(pk), 0) FROM resource_current').pluck().get() as number);
  const rewrite = db.prepare('UPDATE idx_string SET value = ?, exact = NULL WHERE res = ? AND n = ?');
  const remove = db.prepare('DELETE FROM idx_string WHERE res = ? AND n = ?');
  const prefixes = new IndexRowWriter(db);
  let resources = 0;
  // The indexer stores a blinded text once per parameter and resource ("Body Weight" and "Body
  // weight" were two clear rows).
  const seen = new Set<string>();
  let clearRows = 0;
  let res: number | undefined;
  for (let from = 0; from <= maxPk; from += PAGE_RESOURCES) {
    const rows = page.all(from, from + PAGE_RESOURCES) as Array<{ res: number; n: number; param: string; exact: string; type: string }>;
    for (const r of rows) {
      if (!isStringBlindedType(r.type)) continue;
      if (r.res !== res) {
        seen.clear();
        resources++;
      }
      res = r.res;
      clearRows++;
      const t = blinder.text(r.exact);
      const key = `${r.param} ${t?.value}`;
      if (!t || seen.has(key)) {
        remove.run(r.res, r.n);
        continue;
      }
      seen.add(key);
      rewrite.run(t.value, r.res, r.n);
      prefixes.addText(t);
    }
  }
  return { resources, clearRows };
}

/**
 * Upgrades a database of an UPGRADABLE_VERSIONS version to SCHEMA_VERSION in one transaction:
 * from 7 the text rows (then the file is rebuilt (VACUUM) and the WAL emptied, so the clear text
 * of the old rows is left neither in free pages of custos.db nor in custos.db-wal: a copy of the
 * database once); from 7 and 8 search_stats, counted from the index.
 */
export function upgradeDatabase(db: Database.Database, from: number, to: number, blinder: Blinder): MigrationReport {
  if (!UPGRADABLE_VERSIONS.has(from)) throw new Error(`no upgrade from database schema version ${from}`);
  const done = db.transaction(() => {
    const r = from === 7 ? migrateTextRows(db, blinder) : { resources: 0, clearRows: 0 };
    countSearchStats(db);
    db.prepare("UPDATE meta SET value = ? WHERE key = 'schema_version'").run(String(to));
    return r;
  })();
  if (from !== 7) return { from, ...done };
  // The copy VACUUM builds goes to a temporary file, not memory (it is as large as the database).
  db.pragma('temp_store = FILE');
  db.exec('VACUUM');
  db.pragma('temp_store = MEMORY');
  db.pragma('wal_checkpoint(TRUNCATE)');
  return { from, ...done };
}
