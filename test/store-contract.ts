import assert from 'node:assert/strict';
import { describe, it, before, after } from 'node:test';
import type { Resource } from '@medplum/fhirtypes';
import { loadDefinitions } from '../src/fhir/definitions.js';
import { VersionConflictError, type Store, type SearchQuery } from '../src/store/index.js';

/**
 * The behaviour every store adapter must have. An adapter's test file calls this with a
 * factory that opens a fresh, empty store.
 */
export function storeContract(name: string, open: () => Promise<Store>): void {
  describe(`store contract: ${name}`, () => {
    let store: Store;
    before(async () => {
      loadDefinitions();
      store = await open();
    });
    after(async () => store.close());

    const patient = (id: string, family: string): Resource => ({ resourceType: 'Patient', id, name: [{ family, given: ['Ann'] }], birthDate: '1970-03-04' });
    const obs = (id: string, subject: string, code: string, value: number): Resource => ({
      resourceType: 'Observation', id, status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code }] },
      subject: { reference: subject },
      effectiveDateTime: '2024-05-01T10:00:00Z',
      valueQuantity: { value, unit: 'kg', system: 'http://unitsofmeasure.org', code: 'kg' },
    });
    const q = (resourceType: string, extra: Partial<SearchQuery> = {}): SearchQuery => ({ resourceType, filters: [], sort: [], count: 10, offset: 0, total: 'accurate', ...extra });

    it('writes version 1 with meta, content hash and reads it back', async () => {
      const v = await store.transaction((tx) => tx.write({ resourceType: 'Patient', id: 'p1', resource: patient('p1', 'Smith') }));
      assert.equal(v.versionId, 1);
      assert.equal(v.deleted, false);
      assert.match(v.contentHash, /^[0-9a-f]{64}$/);
      assert.equal(v.resource?.meta?.versionId, '1');
      const r = await store.read('Patient', 'p1');
      assert.equal((r?.resource as { name: Array<{ family: string }> }).name[0]!.family, 'Smith');
      assert.equal(r?.contentHash, v.contentHash);
      assert.equal(r?.lastUpdated, v.resource?.meta?.lastUpdated);
    });

    it('keeps every version immutable and readable (vread) and lists history newest first', async () => {
      await store.transaction((tx) => tx.write({ resourceType: 'Patient', id: 'p1', resource: patient('p1', 'Jones') }));
      const v1 = await store.vread('Patient', 'p1', 1);
      const v2 = await store.vread('Patient', 'p1', 2);
      assert.equal((v1?.resource as { name: Array<{ family: string }> }).name[0]!.family, 'Smith');
      assert.equal((v2?.resource as { name: Array<{ family: string }> }).name[0]!.family, 'Jones');
      assert.notEqual(v1?.contentHash, v2?.contentHash);
      const h = await store.history({ resourceType: 'Patient', id: 'p1', count: 10, offset: 0 });
      assert.equal(h.total, 2);
      assert.deepEqual(h.versions.map((v) => v.versionId), [2, 1]);
    });

    it('enforces ifMatch inside the transaction', async () => {
      await assert.rejects(
        store.transaction((tx) => tx.write({ resourceType: 'Patient', id: 'p1', resource: patient('p1', 'X'), ifMatch: 1 })),
        (e: unknown) => e instanceof VersionConflictError && e.actual === 2,
      );
      const cur = await store.read('Patient', 'p1');
      assert.equal(cur?.versionId, 2);
    });

    it('rolls back everything a failed transaction wrote', async () => {
      await assert.rejects(store.transaction(async (tx) => {
        await tx.write({ resourceType: 'Patient', id: 'rb1', resource: patient('rb1', 'Rollback') });
        await tx.write({ resourceType: 'Observation', id: 'rb-o', resource: obs('rb-o', 'Patient/rb1', '1234-5', 1) });
        throw new Error('boom');
      }), /boom/);
      assert.equal(await store.read('Patient', 'rb1'), undefined);
      assert.equal(await store.read('Observation', 'rb-o'), undefined);
      const s = await store.search(q('Patient', { ids: ['rb1'] }));
      assert.equal(s.total, 0);
    });

    it('sees its own uncommitted writes inside a transaction only', async () => {
      let seenInside: number | undefined;
      await store.transaction(async (tx) => {
        await tx.write({ resourceType: 'Patient', id: 'vis', resource: patient('vis', 'Inside') });
        seenInside = (await tx.read('Patient', 'vis'))?.versionId;
      });
      assert.equal(seenInside, 1);
    });

    it('lets exactly one of many concurrent ifMatch writers win', async () => {
      await store.transaction((tx) => tx.write({ resourceType: 'Patient', id: 'race', resource: patient('race', 'R0') }));
      const results = await Promise.allSettled(Array.from({ length: 8 }, (_, i) =>
        store.transaction((tx) => tx.write({ resourceType: 'Patient', id: 'race', resource: patient('race', `R${i + 1}`), ifMatch: 1 }))));
      assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
      assert.equal((await store.read('Patient', 'race'))?.versionId, 2);
    });

    it('marks deletes as versions and removes them from search', async () => {
      await store.transaction(async (tx) => {
        await tx.write({ resourceType: 'Observation', id: 'o1', resource: obs('o1', 'Patient/p1', '29463-7', 70) });
        await tx.write({ resourceType: 'Observation', id: 'o2', resource: obs('o2', 'Patient/p1', '29463-7', 80) });
      });
      const before = await store.search(q('Observation'));
      assert.equal(before.total, 2);
      const d = await store.transaction((tx) => tx.write({ resourceType: 'Observation', id: 'o2' }));
      assert.equal(d.deleted, true);
      assert.equal(d.versionId, 2);
      const cur = await store.read('Observation', 'o2');
      assert.equal(cur?.deleted, true);
      assert.equal(cur?.resource, undefined);
      const after = await store.search(q('Observation'));
      assert.deepEqual(after.matches.map((m) => m.id), ['o1']);
      assert.equal((await store.vread('Observation', 'o2', 1))?.resource?.id, 'o2');
    });

    it('searches by token and reference through the index, and follows references', async () => {
      const byCode = await store.search(q('Observation', { filters: [{ param: 'code', type: 'token', values: [{ prefix: 'eq', value: 'http://loinc.org|29463-7' }], blinded: false }] }));
      assert.deepEqual(byCode.matches.map((m) => m.id), ['o1']);
      const none = await store.search(q('Observation', { filters: [{ param: 'code', type: 'token', values: [{ prefix: 'eq', value: 'http://loinc.org|0000-0' }], blinded: false }] }));
      assert.equal(none.total, 0);
      const rev = await store.referencing('Observation', 'subject', ['Patient/p1'], 10);
      assert.deepEqual(rev.map((r) => r.id), ['o1']);
      const fwd = await store.referencedBy(['Observation/o1'], 'subject', undefined, 10);
      assert.deepEqual(fwd.map((r) => `${r.resourceType}/${r.id}`), ['Patient/p1']);
    });

    it('pages with count/offset in a stable order and reports hasMore', async () => {
      await store.transaction(async (tx) => {
        for (let i = 0; i < 5; i++) await tx.write({ resourceType: 'Device', id: `d${i}`, resource: { resourceType: 'Device', id: `d${i}` } as Resource });
      });
      const p1 = await store.search(q('Device', { count: 2, offset: 0, total: 'none' }));
      const p2 = await store.search(q('Device', { count: 2, offset: 2, total: 'none' }));
      const p3 = await store.search(q('Device', { count: 2, offset: 4, total: 'none' }));
      assert.equal(p1.hasMore, true);
      assert.equal(p3.hasMore, false);
      const ids = [...p1.matches, ...p2.matches, ...p3.matches].map((m) => m.id);
      assert.deepEqual([...ids].sort(), ['d0', 'd1', 'd2', 'd3', 'd4']);
      assert.equal(p3.total, 5);
    });

    it('follows references only from the exact sources and to the exact targets (no type/id cross-over)', async () => {
      await store.transaction((tx) => tx.write({ resourceType: 'Observation', id: 'd1', resource: obs('d1', 'Patient/vis', '1234-5', 1) }));
      const fwd = await store.referencedBy(['Observation/o1', 'Device/d1'], 'subject', undefined, 10);
      assert.deepEqual(fwd.map((r) => `${r.resourceType}/${r.id}`), ['Patient/p1']);
      const rev = await store.referencing('Observation', 'subject', ['Patient/p1', 'Device/vis'], 10);
      assert.deepEqual(rev.map((r) => r.id), ['o1']);
      await store.transaction((tx) => tx.write({ resourceType: 'Observation', id: 'd1' }));
    });

    it('filters history by type and since', async () => {
      const all = await store.history({ count: 100, offset: 0 });
      assert.ok(all.total >= 10);
      const dev = await store.history({ resourceType: 'Device', count: 100, offset: 0 });
      assert.equal(dev.total, 5);
      const future = await store.history({ since: new Date(Date.now() + 60_000).toISOString(), count: 100, offset: 0 });
      assert.equal(future.total, 0);
    });

    it('takes gapless sequence numbers inside transactions: a rolled-back transaction gives its number back', async () => {
      const first = await store.transaction(async (tx) => tx.nextSequence('contract-seq'));
      await assert.rejects(store.transaction(async (tx) => {
        tx.nextSequence('contract-seq');
        throw new Error('roll back');
      }));
      const [a, b] = await Promise.all([
        store.transaction(async (tx) => tx.nextSequence('contract-seq')),
        store.transaction(async (tx) => tx.nextSequence('contract-seq')),
      ]);
      assert.deepEqual([a, b].sort(), [first + 1, first + 2]);
      assert.equal(await store.transaction(async (tx) => tx.nextSequence('other-seq')), 1);
    });

    it('reports changes to the rows consent decisions depend on (watchedChanges), and lists current ids', async () => {
      const before = store.watchedChanges();
      await store.transaction((tx) => tx.write({ resourceType: 'Observation', id: 'w-o', resource: obs('w-o', 'Patient/p1', '1234-5', 1) }));
      assert.equal(store.watchedChanges(), before, 'an Observation is not watched');
      const consent: Resource = { resourceType: 'Consent', id: 'w-c', status: 'active', scope: { text: 'x' }, category: [{ text: 'x' }], policyRule: { text: 'x' } } as Resource;
      await store.transaction((tx) => tx.write({ resourceType: 'Consent', id: 'w-c', resource: consent }));
      const afterWrite = store.watchedChanges();
      assert.notEqual(afterWrite, before);
      assert.ok(store.currentIds('Consent').includes('w-c'));
      await store.transaction((tx) => tx.write({ resourceType: 'Consent', id: 'w-c' }));
      assert.notEqual(store.watchedChanges(), afterWrite, 'a delete counts');
      assert.ok(!store.currentIds('Consent').includes('w-c'), 'deleted resources are not current');
    });

    it('finds the patients a resource references (patientsOf) and applies access conditions inside searches and type history', async () => {
      await store.transaction(async (tx) => {
        await tx.write({ resourceType: 'Patient', id: 'ac-a', resource: patient('ac-a', 'Able') });
        await tx.write({ resourceType: 'Patient', id: 'ac-b', resource: patient('ac-b', 'Baker') });
        await tx.write({ resourceType: 'Observation', id: 'ac-oa', resource: obs('ac-oa', 'Patient/ac-a', '8867-4', 60) });
        await tx.write({ resourceType: 'Observation', id: 'ac-ob', resource: obs('ac-ob', 'Patient/ac-b', '8867-4', 70) });
        await tx.write({ resourceType: 'Observation', id: 'ac-oa2', resource: obs('ac-oa2', 'Patient/ac-a', '2339-0', 80) });
      });
      const patients = await store.patientsOf('Observation', ['ac-oa', 'ac-ob', 'missing'], ['subject', 'performer']);
      assert.deepEqual(patients.get('ac-oa'), ['ac-a']);
      assert.deepEqual(patients.get('ac-ob'), ['ac-b']);
      assert.equal(patients.has('missing'), false);
      const ids = ['ac-oa', 'ac-ob', 'ac-oa2'];
      const inA = { compartment: { patients: ['ac-a'], params: ['subject', 'performer'] } };
      const code = { filter: { param: 'code', type: 'token' as const, values: [{ prefix: 'eq' as const, value: 'http://loinc.org|8867-4' }], blinded: false } };
      const found = async (access: NonNullable<SearchQuery['access']>) => (await store.search(q('Observation', { ids, access }))).matches.map((m) => m.id).sort();
      assert.deepEqual(await found(inA), ['ac-oa', 'ac-oa2']);
      assert.deepEqual(await found({ and: [inA, code] }), ['ac-oa']);
      assert.deepEqual(await found({ and: [inA, { not: code }] }), ['ac-oa2']);
      assert.deepEqual(await found({ or: [{ ids: ['ac-ob'] }, { and: [inA, code] }] }), ['ac-oa', 'ac-ob']);
      assert.deepEqual(await found(false), []);
      assert.equal((await store.search(q('Observation', { ids, access: inA }))).total, 2, 'totals count only what the condition lets through');
      const many = { compartment: { patients: [...Array.from({ length: 100 }, (_, i) => `x${i}`), 'ac-b'], params: ['subject'] } };
      assert.deepEqual(await found(many), ['ac-ob'], 'long patient lists');
      assert.deepEqual(await found({ ids: ['ac-oa'] }), ['ac-oa']);
      const h = await store.history({ resourceType: 'Observation', access: { and: [{ ids }, inA] }, count: 100, offset: 0 });
      assert.deepEqual(h.versions.map((v) => v.id).sort(), ['ac-oa', 'ac-oa2']);
    });

    it('isolates failed transactions that share a group commit, the first one included', async () => {
      const write = (id: string, fail: boolean) => store.transaction(async (tx) => {
        await tx.write({ resourceType: 'Patient', id, resource: patient(id, 'Group') });
        await tx.write({ resourceType: 'Observation', id: `${id}-o`, resource: obs(`${id}-o`, `Patient/${id}`, '1234-5', 1) });
        if (fail) throw new Error(`fail ${id}`);
      });
      // Queued in one tick, so they run in one group; the first one fails after writing.
      const results = await Promise.allSettled([write('ga', true), write('gb', false), write('gc', true), write('gd', false)]);
      assert.deepEqual(results.map((r) => r.status), ['rejected', 'fulfilled', 'rejected', 'fulfilled']);
      for (const id of ['ga', 'gc']) {
        assert.equal(await store.read('Patient', id), undefined);
        assert.equal(await store.read('Observation', `${id}-o`), undefined);
      }
      for (const id of ['gb', 'gd']) assert.equal((await store.read('Observation', `${id}-o`))?.versionId, 1);
      // The data key the rolled-back first job made for its compartment is made again when needed.
      await write('ga', false);
      assert.equal((await store.read('Observation', 'ga-o'))?.versionId, 1);
      assert.equal((await store.search(q('Observation', { ids: ['ga-o', 'gb-o', 'gc-o', 'gd-o'] }))).total, 3);
    });
  });
}
