/**
 * The `write_costs` scenario: the CPU one Observation costs in each stage of a write, measured
 * in-process on one thread (no HTTP, no contention), and the throughput those costs allow on
 * this machine's cores if every stage ran in parallel with perfect scaling. It says where the
 * write-speed targets stand against what the hardware can give, independently of the noise of
 * the HTTP benchmarks. Nothing here asserts on timing.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Resource } from '@medplum/fhirtypes';
import { loadDefinitions } from '../src/fhir/definitions.js';
import { newResourceId } from '../src/fhir/resource-id.js';
import { validationIssues } from '../src/fhir/validate.js';
import { Blinder, contentHash, createIndexer, loadMasterKeys, SqliteStore, type IndexRows } from '../src/store/index.js';
import { observation, CODES, rng } from './fixtures.js';
import { log } from './server-process.js';

const round = (n: number, d = 1) => Math.round(n * 10 ** d) / 10 ** d;

/** CPU microseconds per item of fn over items (user + system, this thread/process). */
export function cpuPerItem<T>(items: readonly T[], fn: (x: T) => void): number {
  const start = process.cpuUsage();
  for (const x of items) fn(x);
  const used = process.cpuUsage(start);
  return (used.user + used.system) / items.length;
}

export async function measureWriteCosts(o: { count: number; bundleSize: number }): Promise<Record<string, unknown>> {
  loadDefinitions();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'custos-bench-write-costs-'));
  try {
    const keys = loadMasterKeys(dir);
    const indexer = createIndexer(new Blinder(keys.indexKey));
    const r = rng(42);
    const patients = Array.from({ length: 100 }, (_, i) => `p${i}`);
    const resources = Array.from({ length: o.count }, () => observation(r, patients[Math.floor(r() * patients.length)]!, CODES[Math.floor(r() * CODES.length)]!) as unknown as Resource);
    const bodies = resources.map((x) => JSON.stringify(x));

    log(`write costs: ${o.count} Observations, stage by stage`);
    // Warm up the JIT and the definitions caches.
    for (const x of resources.slice(0, 500)) { validationIssues(x); indexer.extract(x); }
    const parse = cpuPerItem(bodies, (b) => JSON.parse(b));
    const validate = cpuPerItem(resources, (x) => { validationIssues(x); });
    const indexes: IndexRows[] = [];
    const index = cpuPerItem(resources, (x) => { indexes.push(indexer.extract(x)); });
    const hash = cpuPerItem(resources, (x) => { contentHash(x); });
    const serialize = cpuPerItem(resources, (x) => { JSON.stringify(x); });

    // Store: encrypt, hash, version rows, index rows, commit (fdatasync on the thread pool), in
    // transactions of bundleSize writes, as a transaction Bundle does; with the server's ids and,
    // for comparison, with random (version 4) UUIDs.
    const storeStage = async (name: string, newId: () => string) => {
      const store = SqliteStore.open({ file: path.join(dir, `${name}.db`), keys });
      let cpu = 0;
      const t0 = Date.now();
      for (let i = 0; i < resources.length; i += o.bundleSize) {
        const start = process.cpuUsage();
        await store.transaction(async (tx) => {
          for (let j = i; j < Math.min(i + o.bundleSize, resources.length); j++) {
            const id = newId();
            await tx.write({ resourceType: 'Observation', id, resource: { ...resources[j]!, id }, index: indexes[j] });
          }
        });
        const used = process.cpuUsage(start);
        cpu += used.user + used.system;
      }
      const wallMs = Date.now() - t0;
      await store.close();
      return { us: cpu / resources.length, perS: Math.round((resources.length / wallMs) * 1000) };
    };
    const serverIds = await storeStage('server-ids', () => newResourceId());
    const v4Ids = await storeStage('uuid4-ids', () => randomUUID());
    const store_us = serverIds.us;
    const storeWallMs = (resources.length / serverIds.perS) * 1000;

    const total = parse + validate + index + store_us + serialize;
    const cores = os.availableParallelism();
    return {
      observations: o.count,
      bundle_size: o.bundleSize,
      cpu_us_per_observation: {
        json_parse: round(parse), validate: round(validate), index_extract: round(index), content_hash: round(hash),
        store_write_and_commit: round(store_us), response_serialize: round(serialize), total: round(total),
      },
      store_write_and_commit_with_uuid4_ids_us: round(v4Ids.us),
      store_wall_with_uuid4_ids_observations_per_s: v4Ids.perS,
      store_wall_observations_per_s: Math.round((resources.length / storeWallMs) * 1000),
      cores,
      ceiling_observations_per_s_all_cores: Math.round((cores * 1e6) / total),
      note: 'ceiling = cores / total CPU per Observation: perfect parallelism, without HTTP, auth, Bundle processing, ledger or GC pressure from concurrency',
    };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
