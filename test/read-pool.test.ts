import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import type { Bundle } from '@medplum/fhirtypes';
import { FhirError, fromWorkerFailure, type SearchArgs, type SearchReply } from '../src/fhir/index.js';
import { searchBundle } from '../src/fhir/search-service.js';
import { loadMasterKeys } from '../src/store/index.js';
import { createLogger } from '../src/logger.js';
import { WorkerPool } from '../src/workers.js';
import { FHIR_JSON, readFixture, testApp, WITH_FIXTURES } from './helpers.js';

/** Searches in worker threads (own read connections) answer exactly as on the main thread. */
describe('search worker threads', WITH_FIXTURES, () => {
  let t: Awaited<ReturnType<typeof testApp>>;
  let pool: WorkerPool<SearchArgs, SearchReply>;

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
    pool = new WorkerPool<SearchArgs, SearchReply>({
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
    resourceType, query: [...new URLSearchParams(qs)], strict: false, defaultCount: 20, maxCount: 1000, baseUrl: t.config.baseUrl, cursorSecret: 'read-pool-test-secret',
  });

  it('returns the same Bundles, decrypted with the same keys', async () => {
    for (const [type, qs] of [
      ['Observation', 'subject=Patient/907&code=http://loinc.org|8867-4&_sort=-value-quantity&_total=accurate'],
      ['Observation', 'code=8867-4&date=ge2024-03-01&date=lt2024-03-09&_include=Observation:subject'],
      ['Encounter', 'patient=907&_revinclude=Provenance:target'],
      ['Patient', 'family=baxt&_elements=name'],
    ] as const) {
      const inWorker = JSON.parse((await pool.run(args(type, qs))!).bodyJson) as Bundle;
      const inline = await searchBundle(t.store, args(type, qs));
      assert.deepEqual(inWorker, inline, `${type}?${qs}`);
      assert.ok((inWorker.entry?.length ?? 0) > 0, `${type}?${qs} finds something`);
    }
  });

  it('names the patients of the page when asked, and its resources too when asked for them (for the AuditEvent)', async () => {
    const query = 'code=8867-4&_include=Observation:subject&_count=5';
    const reply = (await pool.run({ ...args('Observation', query), audit: { refs: true } }))!;
    const bundle = JSON.parse(reply.bodyJson) as Bundle;
    const refs = bundle.entry!.map((e) => `${e.resource!.resourceType}/${e.resource!.id}`);
    assert.deepEqual(reply.audit!.refs, [...new Set(refs)]);
    const expected = new Set(bundle.entry!.map((e) => {
      const r = e.resource as { resourceType: string; id: string; subject?: { reference: string } };
      return r.resourceType === 'Patient' ? `Patient/${r.id}` : r.subject!.reference;
    }));
    assert.deepEqual(new Set(reply.audit!.patients), expected);
    assert.equal(reply.audit!.patients.length, expected.size, 'each patient once');
    const patientsOnly = (await pool.run({ ...args('Observation', query), audit: { refs: false } }))!;
    assert.deepEqual(patientsOnly.audit, { patients: reply.audit!.patients }, 'resources only when asked for');
    assert.equal((await pool.run(args('Observation', 'code=8867-4&_count=1')))!.audit, undefined, 'not asked: not done');
  });

  it('carries a FhirError (status and issues) back from the worker', async () => {
    await assert.rejects(pool.run(args('Observation', 'date=yesterday'))!, (e: unknown) => e instanceof FhirError && e.status === 400 && /date/.test(e.message));
  });
});
