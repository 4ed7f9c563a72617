// _total=estimate and _summary=count answer from statistics on large sets: search_stats (row
// counts the writer keeps per exact key and type) times the share of a random sample that
// matches, with its 95 % margin stated in an OperationOutcome entry. Small sets are counted.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import type { Resource } from '@medplum/fhirtypes';
import { loadDefinitions } from '../src/fhir/definitions.js';
import { parseSearch } from '../src/fhir/search/parse.js';
import { SqliteStore } from '../src/store/index.js';
import { FHIR_JSON, tempDir, testServer } from './helpers.js';

const LOINC = 'http://loinc.org';
const DAY = 86_400_000;

function observation(i: number, code: string): Resource {
  return {
    resourceType: 'Observation', id: `o${i}`, status: i % 3 === 0 ? 'preliminary' : 'final',
    code: { coding: [{ system: LOINC, code }] },
    subject: { reference: `Patient/p${i % 4}` },
    effectiveDateTime: new Date(Date.UTC(2025, 0, 1) + (i % 100) * DAY).toISOString(),
  } as Resource;
}

/** search_stats as the index says it should be now. */
function recount(db: Database.Database): string[] {
  return (db.prepare(`SELECT 'token', param, system, code, count(*) FROM idx_token WHERE system IS NOT NULL AND code IS NOT NULL GROUP BY param, system, code
    UNION ALL SELECT 'reference', param, target_type, target_id, count(*) FROM idx_reference WHERE target_type IS NOT NULL AND target_id IS NOT NULL GROUP BY param, target_type, target_id
    UNION ALL SELECT 'type', type, '', '', count(*) FROM resource_current WHERE deleted = 0 GROUP BY type`).raw().all() as unknown[][]).map((r) => r.join('|')).sort();
}
function kept(db: Database.Database): string[] {
  return (db.prepare('SELECT kind, a, b, c, n FROM search_stats WHERE n != 0').raw().all() as unknown[][]).map((r) => r.join('|')).sort();
}

describe('search statistics and estimated totals (store)', () => {
  const keys = { kek: randomBytes(32), indexKey: randomBytes(32) };
  let file: string;
  let store: SqliteStore;
  const search = (qs: string) => store.search(parseSearch('Observation', [...new URLSearchParams(qs)], { strict: true, defaultCount: 0, maxCount: 100, defaultTotal: 'none' }).query);

  before(async () => {
    loadDefinitions();
    file = path.join(tempDir(), 'custos.db');
    store = SqliteStore.open({ file, keys });
    await store.transaction(async (tx) => {
      for (let i = 0; i < 3000; i++) await tx.write({ resourceType: 'Observation', id: `o${i}`, fresh: true, resource: observation(i, i % 10 === 0 ? '9279-1' : '8867-4') });
    });
    // Updates that change the key, and deletes (also of a resource deleted twice).
    await store.transaction(async (tx) => {
      for (let i = 1; i < 200; i += 2) await tx.write({ resourceType: 'Observation', id: `o${i}`, resource: observation(i, '9279-1') });
      for (let i = 2; i < 100; i += 2) await tx.write({ resourceType: 'Observation', id: `o${i}` });
      await tx.write({ resourceType: 'Observation', id: 'o2' });
    });
  });
  after(async () => { await store?.close(); });

  it('the writer keeps search_stats equal to a recount of the index across creates, updates and deletes', () => {
    const db = new Database(file, { readonly: true });
    try {
      const expected = recount(db);
      assert.ok(expected.includes('type|Observation|||2951'), expected.filter((r) => r.startsWith('type')).join());
      assert.deepEqual(kept(db), expected);
    } finally {
      db.close();
    }
  });

  it('estimates a large set within its stated margin, counts small sets, and is exact when asked', async () => {
    // status:not leads nothing (a negation), so the code's rows are the population.
    const accurate = (await search(`code=${LOINC}|8867-4&status:not=preliminary&_total=accurate`)).total!;
    const est = await search(`code=${LOINC}|8867-4&status:not=preliminary&_total=estimate`);
    assert.ok(est.estimate, 'a sampled estimate');
    // 2,700 created with the code, 100 moved to the other, 40 deleted.
    assert.equal(est.estimate.population, 2560, 'the code\'s rows, from search_stats');
    assert.ok(est.estimate.margin > 0 && est.estimate.margin < 300, `margin ${est.estimate.margin}`);
    // Twice the 95 % margin: a false failure about once in 15,000 runs.
    assert.ok(Math.abs(est.total! - accurate) <= 2 * est.estimate.margin, `${est.total} ± ${est.estimate.margin} vs ${accurate}`);
    const small = await search(`code=${LOINC}|9279-1&_total=estimate`);
    assert.equal(small.estimate, undefined, 'a population under 2,000 is counted');
    assert.equal(small.total, (await search(`code=${LOINC}|9279-1&_total=accurate`)).total);
    const limited = parseSearch('Observation', [...new URLSearchParams(`code=${LOINC}|8867-4&status:not=preliminary&_total=estimate`)], { strict: true, defaultCount: 0, maxCount: 100, defaultTotal: 'none' }).query;
    limited.access = { compartment: { patients: ['p1'], params: ['subject'] } };
    const counted = await store.search(limited);
    assert.equal(counted.estimate, undefined, 'no population or margin for a limited principal: they would tell what it may not see');
    assert.ok(counted.total! > 0 && counted.total! < est.estimate.population);
    const confined = await search('subject=Patient/p1&_total=estimate');
    assert.equal(confined.estimate, undefined, 'the narrowest key (a patient\'s 700 rows) is the population');
  });

  it('a version 8 database gets search_stats counted from its index when opened', async () => {
    await store.close();
    const db = new Database(file);
    db.prepare('DELETE FROM search_stats').run();
    db.prepare("UPDATE meta SET value = '8' WHERE key = 'schema_version'").run();
    db.close();
    store = SqliteStore.open({ file, keys });
    assert.deepEqual(store.upgraded, { from: 8, resources: 0, clearRows: 0 });
    const check = new Database(file, { readonly: true });
    try {
      assert.deepEqual(kept(check), recount(check));
    } finally {
      check.close();
    }
  });
});

describe('estimated totals over HTTP', () => {
  let s: Awaited<ReturnType<typeof testServer>>;
  const get = async (rel: string) => {
    const r = await fetch(`${s.base}/${rel}`, { headers: { Authorization: `Bearer ${s.token}`, Accept: FHIR_JSON } });
    return { status: r.status, body: await r.json() as any };
  };

  before(async () => {
    s = await testServer();
    for (let b = 0; b < 7; b++) {
      const entry = Array.from({ length: 300 }, (_, i) => {
        const { id: _id, ...resource } = observation(b * 300 + i, '8867-4') as Resource & { id: string };
        return { resource, request: { method: 'POST', url: 'Observation' } };
      });
      const r = await fetch(`${s.base}`, { method: 'POST', headers: { Authorization: `Bearer ${s.token}`, 'Content-Type': FHIR_JSON, Prefer: 'return=minimal' }, body: JSON.stringify({ resourceType: 'Bundle', type: 'transaction', entry }) });
      assert.equal(r.status, 200, await r.text());
    }
  });
  after(async () => { await s?.close(); });

  it('_summary=count on 2,100 matches is an estimate that says so; _total=accurate counts', async () => {
    const est = await get(`Observation?code=${LOINC}|8867-4&status:not=preliminary&_summary=count`);
    assert.equal(est.status, 200);
    const outcome = est.body.entry?.find((e: any) => e.search?.mode === 'outcome')?.resource;
    assert.equal(outcome?.resourceType, 'OperationOutcome');
    assert.match(outcome.issue[0].diagnostics, /^total is an estimate: [\d,]+ ± [\d,]+ \(95 %\), from 400 of 2,100 candidate resources/);
    const margin = Number(/± ([\d,]+)/.exec(outcome.issue[0].diagnostics)![1]!.replace(/,/g, ''));
    const exact = await get(`Observation?code=${LOINC}|8867-4&status:not=preliminary&_summary=count&_total=accurate`);
    assert.equal(exact.body.entry, undefined, 'no outcome entry for an exact count');
    assert.equal(exact.body.total, 1400);
    assert.ok(Math.abs(est.body.total - exact.body.total) <= 2 * margin, `${est.body.total} ± ${margin} vs ${exact.body.total}`);
    // A page with _total=estimate says the same; without _total a page has no total at all.
    const page = await get(`Observation?code=${LOINC}|8867-4&_total=estimate&_count=5`);
    assert.equal(page.body.total, 2100, 'every sampled row matches: the population itself, margin 0');
    assert.equal((await get(`Observation?code=${LOINC}|8867-4&_count=5`)).body.total, undefined);
  });
});
