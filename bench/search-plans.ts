/**
 * The search planner alone (issue 19): a store of N Observations written through SqliteStore
 * (real indexer, encryption; no HTTP, ledger or audit), then each query timed in-process at the
 * store (access condition applied as the server does), and its next page by cursor. Prints JSON.
 *   node --import tsx bench/search-plans.ts [N=100000] [name filter]
 * The store is kept in $TMPDIR/custos-search-plans-<N> and reused (loading 1,000,000 takes about
 * 5 minutes). `rot_` queries rotate over 2,000 patients, so their pages are rarely in memory.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { loadDefinitions } from '../src/fhir/definitions.js';
import { parseSearch } from '../src/fhir/search/parse.js';
import { applyAccess, confinementExpr, confineQuery } from '../src/fhir/access-constraints.js';
import type { AccessExpr } from '../src/fhir/access-expr.js';
import { SqliteStore } from '../src/store/index.js';
import { CODES, rng } from './fixtures.js';

loadDefinitions();
const N = Number(process.argv[2] ?? 100000);
const only = process.argv[3];
const dir = path.join(os.tmpdir(), `custos-search-plans-${N}`);
const keyFile = `${dir}/keys.json`;
const fresh = !fs.existsSync(keyFile);
fs.mkdirSync(dir, { recursive: true });
if (fresh) fs.writeFileSync(keyFile, JSON.stringify({ kek: randomBytes(32).toString('hex'), indexKey: randomBytes(32).toString('hex') }), { mode: 0o600 });
const k = JSON.parse(fs.readFileSync(keyFile, 'utf8'));
const store = SqliteStore.open({ file: `${dir}/custos.db`, keys: { kek: Buffer.from(k.kek, 'hex'), indexKey: Buffer.from(k.indexKey, 'hex') } });

const PATIENTS = 10_000;
const pid = (i: number) => `p${i}`;
const MAIN = CODES[0]!;
const YEAR_START = Date.UTC(2025, 0, 1);
const YEAR_MS = Date.UTC(2026, 0, 1) - YEAR_START;
const iso = (ms: number) => new Date(Math.floor(ms / 1000) * 1000).toISOString().replace('.000Z', 'Z');

if (fresh) {
  const t0 = performance.now();
  await store.transaction(async (tx) => {
    for (let i = 0; i < PATIENTS; i++) await tx.write({ resourceType: 'Patient', id: pid(i), fresh: true, resource: { resourceType: 'Patient', id: pid(i), name: [{ family: `F${i}` }] } as any });
  });
  const r = rng(7);
  const BATCH = 1000;
  for (let done = 0; done < N; done += BATCH) {
    await store.transaction(async (tx) => {
      for (let j = 0; j < BATCH && done + j < N; j++) {
        const vital = r() < 0.9 ? MAIN : CODES[1 + Math.floor(r() * (CODES.length - 1))]!;
        const subject = pid(Math.floor(r() * PATIENTS));
        const eff = YEAR_START + Math.floor(r() * YEAR_MS);
        const id = `o${done + j}`;
        await tx.write({
          resourceType: 'Observation', id, fresh: true, resource: {
            resourceType: 'Observation', id, status: 'final',
            category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: vital.category }] }],
            code: { coding: [{ system: 'http://loinc.org', code: vital.code, display: vital.display }], text: vital.display },
            subject: { reference: `Patient/${subject}` }, effectiveDateTime: iso(eff), issued: iso(eff + 30_000),
            valueQuantity: { value: 70, unit: vital.unit, system: 'http://unitsofmeasure.org', code: vital.ucum },
          } as any,
        });
      }
    });
    if ((done / BATCH) % 50 === 0) console.error(`loaded ${done}/${N} ${((performance.now() - t0) / 1000).toFixed(0)}s`);
  }
}

const code = encodeURIComponent(`http://loinc.org|${MAIN.code}`);
const consenting = Array.from({ length: 100 }, (_, i) => pid(i * 100));
const practitioner: AccessExpr = { and: [{ patients: consenting }, { not: { otherPatients: consenting } }] };
const Q: Array<[string, string, { access?: AccessExpr; confined?: string }?]> = [
  ['first_page', `code=${code}&date=ge2025-01-01&_count=20`],
  ['latest_value', `code=${code}&_sort=-date&_count=1`],
  ['subject_code_date', `code=${code}&subject=Patient/p7&date=ge2025-06-01&_count=20`],
  ['last_updated', '_sort=_lastUpdated&_count=20'],
  ['subject_sort_date', 'subject=Patient/p7&_sort=-date&_count=20'],
  ['patient_code_latest', `patient=Patient/p7&code=${code}&_sort=-date&_count=1`],
  ['narrow_date', `code=${code}&date=ge2025-12-30&_count=20`],
  ['practitioner', `code=${code}&date=ge2025-01-01&_count=20`, { access: practitioner }],
  ['practitioner_latest', `code=${code}&_sort=-date&_count=1`, { access: practitioner }],
  ['patient_confined', `code=${code}&date=ge2025-01-01&_count=20`, { confined: 'p7' }],
  ['patient_confined_latest', `code=${code}&_sort=-date&_count=1`, { confined: 'p7' }],
  ['sort_date_asc', `code=${code}&_sort=date&_count=20`],
  ['all_default', '_count=20'],
  ['date_only', 'date=ge2025-06-01&_count=20'],
  ['code_lastupdated_desc', `code=${code}&_sort=-_lastUpdated&_count=20`],
  ['status_sort_date', 'status=final&_sort=-date&_count=20'],
  ['offset_1000', `code=${code}&date=ge2025-01-01&_count=20&_offset=1000`],
  ['total_accurate', `code=${code}&_count=20&_total=accurate`],
  ['estimate_code', `code=${code}&_count=0&_total=estimate`],
  ['estimate_code_date', `code=${code}&date=ge2025-07-01&_count=0&_total=estimate`],
  ['estimate_practitioner', `code=${code}&_count=0&_total=estimate`, { access: practitioner }],
  ['estimate_confined', `code=${code}&_count=0&_total=estimate`, { confined: 'p7' }],
  ['estimate_all', `_count=0&_total=estimate`],
  ['accurate_code_date', `code=${code}&date=ge2025-07-01&_count=0&_total=accurate`],
  ['rot_subject_code_date', `code=${code}&subject=Patient/ROT&date=ge2025-06-01&_count=20`],
  ['rot_subject_sort_date', 'subject=Patient/ROT&_sort=-date&_count=20'],
  ['rot_patient_code_latest', `patient=Patient/ROT&code=${code}&_sort=-date&_count=1`],
  ['other_code_latest', `code=${encodeURIComponent('http://loinc.org|9279-1')}&_sort=-date&_count=1`],
];

function query(qs: string, o: { access?: AccessExpr; confined?: string } = {}) {
  const parsed = parseSearch('Observation', [...new URLSearchParams(qs)], { strict: true, defaultCount: 20, maxCount: 1000, defaultTotal: 'none' });
  if (o.confined) confineQuery(parsed.query, o.confined);
  const vis = o.confined ? (o.access ? { and: [confinementExpr(o.confined), o.access] } : confinementExpr(o.confined)) : o.access;
  if (vis) applyAccess(parsed.query, vis as AccessExpr);
  return parsed.query;
}

const results: Record<string, unknown> = {};
for (const [name, qs, o] of Q) {
  if (only && !name.includes(only)) continue;
  const times: number[] = [];
  let first: any;
  let next: any;
  const deadline = performance.now() + 3000;
  while (times.length < 5 || (performance.now() < deadline && times.length < 200)) {
    const q = query(qs.replace('ROT', pid(Math.floor(Math.random() * 2000) * 5)), o);
    const t = performance.now();
    const r = await store.search(q);
    times.push(performance.now() - t);
    first ??= r;
  }
  if (first.last) {
    const q = query(qs, o);
    q.after = first.last;
    const t = performance.now();
    next = await store.search(q);
    next = { ms: +(performance.now() - t).toFixed(2), n: next.matches.length, overlap: next.matches.some((m: any) => first.matches.some((f: any) => f.id === m.id)) };
  }
  times.sort((a, b) => a - b);
  results[name] = { total: first.total, estimate: first.estimate, n: first.matches.length, ids: first.matches.slice(0, 3).map((m: any) => m.id), p50: +times[Math.floor(times.length / 2)]!.toFixed(2), max: +times[times.length - 1]!.toFixed(2), runs: times.length, next };
  console.error(name.padEnd(24), JSON.stringify(results[name]));
}
await store.close();
console.log(JSON.stringify({ observations: N, unit: 'ms at the store, p50 and max of up to 200 runs', queries: results }, null, 2));
