/**
 * In-process CPU of writing one read's AuditEvent, as the audit writer thread does it (build,
 * blind the query, extract index rows, encrypt, hash, store in transactions of 64), on one
 * thread without HTTP: what each AuditEvent costs the machine. Nothing here asserts on timing.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { AuditRecorder, buildAuditEvent, type AuditFacts } from '../src/audit/index.js';
import { loadDefinitions } from '../src/fhir/definitions.js';
import { Blinder, createIndexer, loadMasterKeys, SqliteStore } from '../src/store/index.js';
import { log } from './server-process.js';
import { cpuPerItem } from './write-costs.js';

const round = (n: number, d = 1) => Math.round(n * 10 ** d) / 10 ** d;

/** A read of one Observation by a backend client, as the router reports it. */
function readFacts(i: number): AuditFacts {
  const patient = `Patient/p${i % 100}`;
  const obs = `Observation/o${i}`;
  return {
    interaction: 'read', status: 200, recorded: new Date(), address: '127.0.0.1',
    principal: { kind: 'token', clientId: 'bench-client', subject: 'bench-client', tokenId: '', scope: '', scopes: [] },
    resources: [obs], patients: [patient], owners: { [obs]: [patient] },
  };
}

export async function measureAuditCosts(o: { count: number }): Promise<Record<string, unknown>> {
  loadDefinitions();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'custos-bench-audit-costs-'));
  try {
    const keys = loadMasterKeys(dir);
    const blinder = new Blinder(keys.indexKey);
    const indexer = createIndexer(blinder);
    const facts = Array.from({ length: o.count }, (_, i) => readFacts(i));
    log(`audit costs: ${o.count} AuditEvents of reads, stage by stage`);
    const events = facts.map((f, i) => ({ ...buildAuditEvent(f, { observer: 'http://127.0.0.1/fhir', seq: i + 1 }), id: `e${i}` }));
    for (const e of events.slice(0, 500)) indexer.extract(e);
    const build = cpuPerItem(facts, (f) => { buildAuditEvent(f, { observer: 'http://127.0.0.1/fhir', seq: 1 }); });
    const index = cpuPerItem(events, (e) => { indexer.extract(e); });
    const rows = indexer.extract(events[0]!);
    const indexRows = Object.values(rows).reduce((n, list) => n + list.length, 0);

    const store = SqliteStore.open({ file: path.join(dir, 'audit.db'), keys, backgroundCheckpoint: false });
    const recorder = new AuditRecorder({ store, blinder, flushMs: 1_000_000, observer: 'http://127.0.0.1/fhir' });
    // Warm up (statements, caches), then measure the whole write path.
    for (const f of facts.slice(0, 1000)) recorder.later(f);
    await recorder.flush();
    const start = process.cpuUsage();
    const t0 = performance.now();
    for (const f of facts) recorder.later(f);
    await recorder.flush();
    const used = process.cpuUsage(start);
    const wallMs = performance.now() - t0;
    await recorder.close();
    await store.close();
    const total = (used.user + used.system) / facts.length;
    return {
      events: o.count,
      index_rows_per_event: indexRows,
      cpu_us_per_event: { build: round(build), index_extract: round(index), write_path_total: round(total) },
      events_per_s_one_thread: Math.round((facts.length / wallMs) * 1000),
      note: 'write_path_total is everything the writer thread does per AuditEvent (build, blinding, index extraction, encryption, hash, rows, commit with fdatasync), CPU of all threads',
    };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
