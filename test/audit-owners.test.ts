import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { Bundle, Resource } from '@medplum/fhirtypes';
import { getPatientCompartmentParams, loadDefinitions } from '../src/fhir/definitions.js';
import { ownersFromIndex, ownersOfRefs } from '../src/fhir/audit-note.js';
import { Blinder, createIndexer, SqliteStore } from '../src/store/index.js';
import { FIXTURES, tempDir, WITH_FIXTURES } from './helpers.js';

/**
 * A write's AuditEvent names the patients of what was written from the index rows in hand
 * (ownersFromIndex); a read's, from the store (ownersOfRefs). Both must name the same patients.
 */
describe('owners of a written resource for its AuditEvent', WITH_FIXTURES, () => {
  let store: SqliteStore;
  const written: Array<{ resource: Resource; owners: string[] }> = [];
  after(async () => { await store?.close(); });

  before(async () => {
    loadDefinitions();
    const keys = { kek: randomBytes(32), indexKey: randomBytes(32) };
    store = SqliteStore.open({ file: path.join(tempDir(), 'custos.db'), keys });
    const indexer = createIndexer(new Blinder(keys.indexKey));
    const dir = path.join(FIXTURES, 'synthea/inferno-us-core');
    const file = fs.readdirSync(dir).find((f) => f.endsWith('.json'))!;
    const bundle = JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')) as Bundle;
    // Synthea links entries by urn:uuid: full URLs; stored under their own ids, as the server would after resolving them.
    const ids = new Map((bundle.entry ?? []).map((e) => [e.fullUrl!, `${e.resource!.resourceType}/${e.resource!.id}`]));
    const resources = (bundle.entry ?? []).map((e) => JSON.parse(JSON.stringify(e.resource).replace(/"urn:uuid:[0-9a-f-]+"/g, (u) => JSON.stringify(ids.get(JSON.parse(u)) ?? JSON.parse(u)))) as Resource);
    await store.transaction(async (tx) => {
      for (const r of resources) {
        const index = indexer.extract(r);
        await tx.write({ resourceType: r.resourceType, id: r.id!, resource: r, index });
        written.push({ resource: r, owners: ownersFromIndex(r.resourceType, r.id!, index) });
      }
    });
  });

  it('names the same patients as the store does for every resource of a Synthea record', async () => {
    assert.ok(written.length > 100, `only ${written.length} resources`);
    let withOwners = 0;
    for (const { resource: r, owners } of written) {
      const ref = `${r.resourceType}/${r.id}`;
      const stored = (await ownersOfRefs(store, [ref]))[ref] ?? [];
      assert.deepEqual(owners, stored, ref);
      if (owners.length) withOwners++;
    }
    assert.ok(withOwners > written.length / 2, 'most resources of a patient record are in its compartment');
  });

  it('a search asked for patientsVia gives each match the same patients, read with the match (every type of the record)', async () => {
    const types = [...new Set(written.map((w) => w.resource.resourceType))].filter((t) => t !== 'Patient' && getPatientCompartmentParams(t).length > 0);
    assert.ok(types.length > 5, types.join(','));
    let checked = 0;
    for (const type of types) {
      const found = await store.search({ resourceType: type, filters: [], sort: [], count: 1000, offset: 0, total: 'none', patientsVia: getPatientCompartmentParams(type) });
      assert.ok(found.matches.length > 0, type);
      for (const v of found.matches) {
        const ref = `${v.resourceType}/${v.id}`;
        const expected = (await ownersOfRefs(store, [ref]))[ref] ?? [];
        assert.deepEqual((v.patients ?? []).map((p) => `Patient/${p}`), expected, ref);
        checked++;
      }
    }
    assert.equal(checked, written.filter((w) => types.includes(w.resource.resourceType)).length);
    const plain = await store.search({ resourceType: types[0]!, filters: [], sort: [], count: 1, offset: 0, total: 'none' });
    assert.equal(plain.matches[0]!.patients, undefined, 'not asked: not read');
  });
});
