import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import type { Resource } from '@medplum/fhirtypes';
import { loadDefinitions } from '../src/fhir/definitions.js';
import { parseSearch } from '../src/fhir/search/parse.js';
import { Blinder } from '../src/store/blind.js';
import { createIndexer } from '../src/store/indexer.js';
import { IndexRowWriter } from '../src/store/sqlite/index-rows.js';
import { compileSearch, pageRows, type CompiledSearch, type PlanKind } from '../src/store/sqlite/search-plan.js';
import { SCHEMA } from '../src/store/sqlite/schema.js';
import type { AccessCondition, SearchPosition, SearchQuery } from '../src/store/types.js';

/**
 * Every way the planner can read a page (materialize the narrowest filter, walk an exact key in
 * resource order, walk it in date order merged with the rows without a single date) must give the
 * same matches in the same order, page after page by cursor: the plan changes cost, never results.
 */
const blinder = new Blinder(Buffer.alloc(32, 5));
const db = new Database(':memory:');
const LOINC = 'http://loinc.org';
const CODES = ['8867-4', '9279-1', '8310-5'];
const DAY = 86_400_000;

function observation(i: number): Resource {
  const base = Date.UTC(2025, 0, 1);
  // Ties on purpose (every 7th shares a date with its neighbour), some without a date, some a
  // wide period (no single narrow date: dlo NULL), some a day-precision date.
  const day = Math.floor(i / 2) % 40;
  const effective: Record<string, unknown> =
    i % 11 === 0 ? {}
      : i % 13 === 0 ? { effectivePeriod: { start: new Date(base + day * DAY).toISOString(), end: new Date(base + (day + 9) * DAY).toISOString() } }
        : i % 17 === 0 ? { effectiveDateTime: new Date(base + day * DAY).toISOString().slice(0, 10) }
          : { effectiveDateTime: new Date(base + day * DAY + (i % 7 === 0 ? 0 : (i % 5) * 3_600_000)).toISOString() };
  return {
    resourceType: 'Observation',
    id: `o${i}`,
    status: i % 9 === 0 ? 'preliminary' : 'final',
    code: { coding: [{ system: LOINC, code: CODES[i % 3]! }] },
    subject: { reference: `Patient/p${i % 5}` },
    ...(i % 19 === 0 ? { performer: [{ reference: `Patient/p${(i + 1) % 5}` }] } : {}),
    ...effective,
  } as Resource;
}

before(() => {
  loadDefinitions();
  db.exec(SCHEMA);
  const indexer = createIndexer(blinder);
  const insert = db.prepare('INSERT INTO resource_current (type, id, version, last_updated, deleted) VALUES (?, ?, 1, ?, 0)');
  const rows = new IndexRowWriter(db);
  db.transaction(() => {
    const resources: Resource[] = [
      ...Array.from({ length: 5 }, (_, i) => ({ resourceType: 'Patient', id: `p${i}` }) as Resource),
      ...Array.from({ length: 400 }, (_, i) => observation(i)),
      // A rare code of one patient: walking it beats walking the patient's rows.
      ...[400, 401, 402].map((i) => ({ ...observation(i), code: { coding: [{ system: LOINC, code: 'rare-1' }] }, subject: { reference: 'Patient/p2' } }) as Resource),
    ];
    resources.forEach((r, i) => {
      const pk = Number(insert.run(r.resourceType, r.id, Date.UTC(2025, 5, 1) + (i % 50) * 1000).lastInsertRowid);
      rows.insert(pk, r.resourceType, indexer.extract(r));
    });
  })();
});

const estimate = (sql: string, params: unknown[]) => db.prepare(sql).pluck().get(...params) as number;
const idOf = (pk: number) => db.prepare('SELECT id FROM resource_current WHERE pk = ?').pluck().get(pk) as string;

function query(qs: string, access?: AccessCondition): SearchQuery {
  const q = parseSearch('Observation', [...new URLSearchParams(qs)], { strict: true, defaultCount: 1000, maxCount: 1000 }).query;
  if (access !== undefined) q.access = access;
  return q;
}

/** Forces a plan: a cap of 1 makes every filter "wide" (walks), a huge one makes every filter narrow enough to read whole. */
const PLANS: Record<string, (q: SearchQuery) => CompiledSearch> = {
  walks: (q) => compileSearch(q, blinder, estimate, { probeCap: 1 }),
  reads: (q) => compileSearch(q, blinder, estimate, { probeCap: 1e9 }),
  heuristic: (q) => compileSearch(q, blinder),
};

function page(c: CompiledSearch, limit: number, offset = 0): number[] {
  return pageRows((sql, params) => db.prepare(sql).all(...params) as Array<{ pk: number; version: number }>, c, limit, offset).map((r) => r.pk);
}

/** All matches, fetched `size` at a time by cursor, as the adapter does it. */
function byCursor(make: (q: SearchQuery) => CompiledSearch, qs: string, size: number, access?: AccessCondition): string[] {
  const out: number[] = [];
  let after: SearchPosition | undefined;
  for (let guard = 0; guard < 1000; guard++) {
    const q = query(qs, access);
    if (after) q.after = after;
    const c = make(q);
    const rows = page(c, size + 1);
    out.push(...rows.slice(0, size));
    if (rows.length <= size) return out.map(idOf);
    const pk = rows[size - 1]!;
    const keys = c.keys.length ? db.prepare(`SELECT ${c.keys.map((k) => k.sql).join(', ')} FROM resource_current c WHERE c.pk = ?`).raw().get(...c.keys.flatMap((k) => k.params), pk) as Array<string | number | null> : [];
    after = { keys, pk };
  }
  throw new Error('paging did not end');
}

const consent: AccessCondition = { and: [{ compartment: { patients: ['p1', 'p3'], params: ['subject', 'performer'] } }, { not: { outside: { patients: ['p1', 'p3'], params: ['subject', 'performer'] } } }] };

/** walk: the plan when every filter is wide; read: when every filter is narrow (default 'in'). */
const CASES: Array<{ qs: string; access?: AccessCondition; walk?: PlanKind; read?: PlanKind }> = [
  // A lone exact key is walked however narrow: its index is already in the order asked.
  { qs: `code=${LOINC}|8867-4`, walk: 'walk', read: 'walk' },
  // The code is narrow enough (134 rows) to be taken without probing the rest: walked, as it is in order.
  { qs: `code=${LOINC}|8867-4&date=ge2025-01-10`, walk: 'walk', read: 'walk' },
  { qs: `code=${LOINC}|8867-4&date=ge2025-01-10&date=lt2025-02-01&status=final`, walk: 'walk', read: 'walk' },
  { qs: `code=${LOINC}|8867-4&_sort=-date`, walk: 'walk-date' },
  { qs: `code=${LOINC}|8867-4&_sort=date`, walk: 'walk-date' },
  { qs: `code=${LOINC}|9279-1&date=ge2025-01-15&_sort=-date`, walk: 'walk-date' },
  { qs: 'subject=Patient/p2&_sort=-date', walk: 'walk-date' },
  { qs: `patient=Patient/p2&code=${LOINC}|8310-5&_sort=-date`, walk: 'walk-date' },
  { qs: 'subject=Patient/p4&date=le2025-01-20', walk: 'walk' },
  { qs: `code=${LOINC}|8867-4&_sort=-date`, access: consent, walk: 'walk-date' },
  { qs: `code=${LOINC}|8867-4&date=ge2025-01-05`, access: consent, walk: 'walk' },
  { qs: 'status=final&_sort=-date' },
  { qs: `code=${LOINC}|8867-4&_sort=-_lastUpdated`, walk: 'scan' },
  { qs: `code=${LOINC}|9279-1&_sort=_lastUpdated`, walk: 'scan' },
  { qs: 'date=ge2025-01-10', walk: 'scan' },
  { qs: '', walk: 'scan', read: 'scan' },
];

describe('search plans', () => {
  for (const { qs, access, walk, read } of CASES) {
    it(`every plan gives the same pages: ${qs}${access ? ' (consent-limited)' : ''}`, () => {
      const expected = page(PLANS.reads!(query(qs, access)), 1000).map(idOf);
      assert.ok(expected.length >= 3, `the case should match several resources (${expected.length})`);
      if (walk) assert.equal(PLANS.walks!(query(qs, access)).plan, walk);
      assert.equal(PLANS.reads!(query(qs, access)).plan, read ?? 'in');
      for (const [name, make] of Object.entries(PLANS)) {
        assert.deepEqual(page(make(query(qs, access)), 1000).map(idOf), expected, `${name}: one page`);
        assert.deepEqual(page(make(query(qs, access)), 5, 3).map(idOf), expected.slice(3, 8), `${name}: by offset`);
        for (const size of [1, 4, 9]) assert.deepEqual(byCursor(make, qs, size, access), expected, `${name}: by cursor, ${size} a page`);
      }
    });
  }

  it('walks the exact key with the fewest rows (by the kept row counts), whatever its kind', () => {
    const c = PLANS.walks!(query(`patient=Patient/p2&code=${LOINC}|rare-1&_sort=-date`));
    assert.equal(c.plan, 'walk-date');
    assert.match(c.arms[0]!.sql, /FROM idx_token d JOIN/);
    assert.deepEqual(page(c, 10).map(idOf), ['o402', 'o401', 'o400']);
    assert.match(PLANS.walks!(query(`patient=Patient/p2&code=${LOINC}|8867-4&_sort=-date`)).arms[0]!.sql, /FROM idx_reference d JOIN/);
  });

  it('sorts by date descending as the exact reverse of ascending, missing dates last in both', () => {
    const asc = page(PLANS.reads!(query(`code=${LOINC}|8867-4&_sort=date`)), 1000).map(idOf);
    const desc = page(PLANS.walks!(query(`code=${LOINC}|8867-4&_sort=-date`)), 1000).map(idOf);
    const missing = asc.filter((id) => Number(id.slice(1)) % 11 === 0);
    assert.ok(missing.length > 0);
    assert.deepEqual(asc.slice(-missing.length), missing);
    assert.deepEqual(desc.slice(0, desc.length - missing.length), asc.slice(0, asc.length - missing.length).reverse());
  });
});
