import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import type { Bundle } from '@medplum/fhirtypes';
import { FhirError, fromWorkerFailure, type SearchArgs } from '../src/fhir/index.js';
import { searchBundle } from '../src/fhir/search-service.js';
import { loadMasterKeys } from '../src/store/index.js';
import { createLogger } from '../src/logger.js';
import { WorkerPool } from '../src/workers.js';
import { FHIR_JSON, readFixture, testApp } from './helpers.js';

/** Searches in worker threads (own read connections) answer exactly as on the main thread. */
describe('search worker threads', () => {
  let t: Awaited<ReturnType<typeof testApp>>;
  let pool: WorkerPool<SearchArgs, string>;

  before(async () => {
    t = await testApp({ READ_WORKERS: '0' });
    const bundle = readFixture('synthea/inferno-us-core/uscore_bundle_patient_907.json');
    assert.equal((await request(t.app).post('/fhir').set('Content-Type', FHIR_JSON).send(JSON.stringify(bundle))).status, 200);
    for (const v of [61, 72, 88]) {
      await request(t.app).post('/fhir/Observation').set('Content-Type', FHIR_JSON).send(JSON.stringify({
        resourceType: 'Observation', status: 'final', code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
        subject: { reference: 'Patient/907' }, effectiveDateTime: `2024-03-0${v % 9}T10:00:00Z`, valueQuantity: { value: v },
      }));
    }
    const keys = loadMasterKeys(t.config.dataDir);
    pool = new WorkerPool<SearchArgs, string>({
      name: 'search', entry: new URL('../src/fhir/read-worker.js', import.meta.url),
      workerData: { file: path.join(t.config.dataDir, 'custos.db'), ...keys }, size: 1, logger: createLogger('silent'), toError: fromWorkerFailure,
    });
    for (let i = 0; i < 100 && !pool.ready; i++) await new Promise((r) => setTimeout(r, 100));
    assert.ok(pool.ready, 'worker started');
  });
  after(async () => {
    await pool.close();
    await t.close();
  });

  const args = (resourceType: string, qs: string): SearchArgs => ({
    resourceType, query: [...new URLSearchParams(qs)], strict: false, defaultCount: 20, maxCount: 1000, baseUrl: t.config.baseUrl,
  });

  it('returns the same Bundles, decrypted with the same keys', async () => {
    for (const [type, qs] of [
      ['Observation', 'subject=Patient/907&code=http://loinc.org|8867-4&_sort=-value-quantity&_total=accurate'],
      ['Observation', 'code=8867-4&date=ge2024-03-01&date=lt2024-03-09&_include=Observation:subject'],
      ['Encounter', 'patient=907&_revinclude=Provenance:target'],
      ['Patient', 'family=baxt&_elements=name'],
    ] as const) {
      const inWorker = JSON.parse(await pool.run(args(type, qs))!) as Bundle;
      const inline = await searchBundle(t.store, args(type, qs));
      assert.deepEqual(inWorker, inline, `${type}?${qs}`);
      assert.ok((inWorker.entry?.length ?? 0) > 0, `${type}?${qs} finds something`);
    }
  });

  it('carries a FhirError (status and issues) back from the worker', async () => {
    await assert.rejects(pool.run(args('Observation', 'date=yesterday'))!, (e: unknown) => e instanceof FhirError && e.status === 400 && /date/.test(e.message));
  });
});
