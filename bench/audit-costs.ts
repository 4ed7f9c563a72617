/**
 * In-process CPU of writing AuditEvents as the audit writer thread does it (build, blind the
 * query, canonical JSON, hash, seal, journal rows, commits of up to 512 events with fdatasync), on
 * one thread without HTTP: what each AuditEvent costs the machine, for a read (one resource, one
 * patient) and for a search (its query and the patients of its page). Nothing here asserts on timing.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { AuditRecorder, buildAuditEvent, type AuditFacts } from '../src/audit/index.js';
import { loadDefinitions } from '../src/fhir/definitions.js';
import { canonicalJson } from '../src/store/content-hash.js';
import { Blinder, loadMasterKeys, SqliteStore } from '../src/store/index.js';
import { log } from './server-process.js';
import { cpuPerItem } from './write-costs.js';

const round = (n: number, d = 1) => Math.round(n * 10 ** d) / 10 ** d;
const PATIENTS = 100;
const principal = { kind: 'token' as const, clientId: 'bench-client', subject: 'bench-client', tokenId: '', scope: '', scopes: [] };

/** A read of one Observation by a backend client, as the router reports it. */
function readFacts(i: number): AuditFacts {
  const patient = `Patient/p${i % PATIENTS}`;
  const obs = `Observation/o${i}`;
  return { interaction: 'read', status: 200, recorded: new Date(), address: '127.0.0.1', principal, resources: [obs], patients: [patient], owners: { [obs]: [patient] } };
}

/** A code+date search whose page held the Observations of `perPage` patients. */
function searchFacts(i: number, perPage: number): AuditFacts {
  return {
    interaction: 'search-type', status: 200, recorded: new Date(), address: '127.0.0.1', principal, resourceType: 'Observation', resources: [],
    query: 'code=http%3A%2F%2Floinc.org%7C8867-4&date=ge2024-03-01&date=lt2024-03-05',
    patients: Array.from({ length: perPage }, (_, k) => `Patient/p${(i * 13 + k * 7) % PATIENTS}`),
  };
}

async function writePath(dir: string, name: string, facts: AuditFacts[]): Promise<Record<string, number>> {
  const keys = loadMasterKeys(dir);
  const blinder = new Blinder(keys.indexKey);
  const file = path.join(dir, `${name}.db`);
  // As the writer thread: no checkpoints of its own, and (with no server writes waiting) its largest transactions.
  const store = SqliteStore.open({ file, keys, backgroundCheckpoint: false, noCheckpoints: true });
  const recorder = new AuditRecorder({ store, blinder, flushMs: 1_000_000, observer: 'http://127.0.0.1/fhir', yieldWhen: () => false });
  try {
    // Warm up (statements, caches), then measure the whole write path.
    for (const f of facts.slice(0, 1000)) recorder.later(f);
    await recorder.flush();
    const walBefore = fs.statSync(`${file}-wal`).size;
    const start = process.cpuUsage();
    const t0 = performance.now();
    for (const f of facts) recorder.later(f);
    await recorder.flush();
    const used = process.cpuUsage(start);
    const wallMs = performance.now() - t0;
    return {
      write_path_total: round((used.user + used.system) / facts.length),
      events_per_s_one_thread: Math.round((facts.length / wallMs) * 1000),
      wal_bytes_per_event: Math.round((fs.statSync(`${file}-wal`).size - walBefore) / facts.length),
    };
  } finally {
    await recorder.close();
    await store.close();
  }
}

export async function measureAuditCosts(o: { count: number }): Promise<Record<string, unknown>> {
  loadDefinitions();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'custos-bench-audit-costs-'));
  try {
    log(`audit costs: ${o.count} AuditEvents of reads, then of searches, stage by stage`);
    const reads = Array.from({ length: o.count }, (_, i) => readFacts(i));
    const searches = Array.from({ length: o.count }, (_, i) => searchFacts(i, 12));
    const out: Record<string, unknown> = { events: o.count };
    for (const [kind, facts] of [['read', reads], ['search_12_patients', searches]] as const) {
      const events = facts.map((f, i) => buildAuditEvent(f, { observer: 'http://127.0.0.1/fhir', seq: i + 1 }));
      out[kind] = {
        event_bytes: canonicalJson(events[0]).length,
        cpu_us_per_event: {
          build: round(cpuPerItem(facts, (f) => { buildAuditEvent(f, { observer: 'http://127.0.0.1/fhir', seq: 1 }); })),
          canonical_json: round(cpuPerItem(events, (e) => { canonicalJson(e); })),
          ...(await writePath(dir, kind, facts)),
        },
      };
    }
    out.note = 'write_path_total is everything the writer thread does per AuditEvent (build, blinding, canonical JSON, hash, sealing, journal rows, commit with fdatasync), CPU of all threads';
    return out;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
