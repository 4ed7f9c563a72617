import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { Resource } from '@medplum/fhirtypes';
import { loadDefinitions } from '../src/fhir/definitions.js';
import { InlinePreparer, WorkerPreparer } from '../src/fhir/write-pool.js';
import { createLogger } from '../src/logger.js';
import { readFixture, WITH_FIXTURES } from './helpers.js';

describe('write preparation in worker threads', () => {
  const key = randomBytes(32);
  let pool: WorkerPreparer;
  const inline = new InlinePreparer(key);

  before(async () => {
    loadDefinitions();
    pool = new WorkerPreparer(key, 1, createLogger('silent'));
    // Wait until the worker has loaded the definitions, so the test exercises it (not the fallback).
    for (let i = 0; i < 100 && !pool.ready; i++) await new Promise((r) => setTimeout(r, 100));
    assert.ok(pool.ready, 'worker started');
  });
  after(async () => pool.close());

  it('returns the same index rows and validation issues as the inline path', WITH_FIXTURES, async () => {
    for (const file of ['Observation-example.json', 'Patient-example.json', 'Observation-bmd.json']) {
      const r = readFixture<Resource>(`hl7-examples/r4-core/${file}`);
      assert.deepEqual(await pool.prepare(r), inline.prepareNow(r), file);
    }
    const bad = { resourceType: 'Observation', status: 'final', valueQuantity: { value: 'x' } } as unknown as Resource;
    const issues = await pool.validate(bad);
    assert.ok(issues.length >= 2);
    assert.deepEqual(issues, await inline.validate(bad));
    assert.equal((await pool.prepare(bad)).index, undefined, 'no index rows for invalid content');
  });

  it('handles many concurrent requests and answers each one', async () => {
    const obs = (v: number) => ({ resourceType: 'Observation', status: 'final', code: { text: 'hr' }, valueQuantity: { value: v } }) as Resource;
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => pool.prepare(obs(i))));
    results.forEach((r, i) => {
      assert.equal(r.issues.length, 0);
      assert.equal(r.index!.quantity.find((q) => q.param === 'value-quantity')!.value, i);
    });
  });

  it('answers the requests of a worker that dies under them (on this thread)', async () => {
    const obs = (v: number) => ({ resourceType: 'Observation', status: 'final', code: { text: 'spo2' }, valueQuantity: { value: v } }) as Resource;
    const inFlight = Array.from({ length: 50 }, (_, i) => pool.prepare(obs(i)));
    const slots = (pool as unknown as { pool: { slots: Array<{ worker: { terminate(): Promise<number> } }> } }).pool.slots;
    await slots[0]!.worker.terminate();
    const results = await Promise.all(inFlight);
    results.forEach((r, i) => assert.equal(r.index!.quantity.find((q) => q.param === 'value-quantity')!.value, i));
  });
});
