import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import path from 'node:path';
import request from 'supertest';
import type { Observation, Parameters } from '@medplum/fhirtypes';
import { FHIR_JSON, testApp } from './helpers.js';
import { rootFromInclusionProof } from '../src/ledger/index.js';

type TestApp = Awaited<ReturnType<typeof testApp>>;

const param = (p: Parameters, name: string) => p.parameter?.find((x) => x.name === name);
const all = (p: Parameters, name: string) => (p.parameter ?? []).filter((x) => x.name === name);

/** Ledger anchoring end to end: real anvil, real compiled contract, real HTTP. */
describe('ledger anchoring (embedded anvil)', () => {
  let t: TestApp;
  const obs = (value: number): Observation => ({ resourceType: 'Observation', status: 'final', code: { text: 'spo2' }, valueQuantity: { value, unit: '%' } });

  before(async () => {
    // Batches are cut on size (5) or time (a long 60 s), so the test decides when. Without the
    // audit trail: the AuditEvents of its own requests would decide which versions share a batch.
    t = await testApp({ LEDGER: 'embedded', LEDGER_BATCH_SIZE: '5', LEDGER_BATCH_MS: '60000', AUDIT: 'off' });
  });
  after(async () => t.close());

  it('$ledger-status reports the embedded chain, contract, anchorer and backlog', async () => {
    const res = await request(t.app).get('/fhir/$ledger-status');
    assert.equal(res.status, 200, res.text);
    const p = res.body as Parameters;
    assert.equal(param(p, 'mode')?.valueCode, 'embedded');
    assert.match(param(p, 'rpcUrl')!.valueString!, /^http:\/\/127\.0\.0\.1:\d+/);
    assert.match(param(p, 'contractAddress')!.valueString!, /^0x[0-9a-fA-F]{40}$/);
    assert.match(param(p, 'anchorer')!.valueString!, /^0x[0-9a-fA-F]{40}$/);
    assert.equal(param(p, 'chainId')!.valueString, String(t.ledger.chain!.chainId));
    assert.equal(typeof param(p, 'backlog')!.valueInteger, 'number');
    const cs = (await request(t.app).get('/fhir/metadata')).body;
    assert.ok(cs.rest[0].operation.some((o: { name: string }) => o.name === 'ledger-status'));
    const obsEntry = cs.rest[0].resource.find((r: { type: string }) => r.type === 'Observation');
    assert.ok(obsEntry.operation.some((o: { name: string }) => o.name === 'verify'));
  });

  it('a version is pending until its batch is anchored, then $verify gives a proof that leads to the root on chain', async () => {
    const created = await request(t.app).post('/fhir/Observation').set('content-type', FHIR_JSON).send(JSON.stringify(obs(97)));
    assert.equal(created.status, 201);
    const id = created.body.id as string;
    const pending = (await request(t.app).get(`/fhir/Observation/${id}/$verify`)).body as Parameters;
    assert.equal(param(pending, 'status')?.valueCode, 'pending');
    assert.match(param(pending, 'contentHash')!.valueString!, /^[0-9a-f]{64}$/);

    for (let i = 0; i < 4; i++) assert.equal((await request(t.app).post('/fhir/Observation').set('content-type', FHIR_JSON).send(JSON.stringify(obs(90 + i)))).status, 201);
    await t.ledger.flush();
    const res = await request(t.app).get(`/fhir/Observation/${id}/_history/1/$verify`);
    assert.equal(res.status, 200, res.text);
    const p = res.body as Parameters;
    assert.equal(param(p, 'status')?.valueCode, 'anchored', JSON.stringify(p));
    const hash = Buffer.from(param(p, 'contentHash')!.valueString!, 'hex');
    const index = param(p, 'leafIndex')!.valueInteger!;
    const size = param(p, 'treeSize')!.valueInteger!;
    const pathHashes = all(p, 'auditPath').map((x) => Buffer.from(x.valueString!, 'hex'));
    const root = rootFromInclusionProof(hash, index, size, pathHashes)!;
    assert.equal(root.toString('hex'), param(p, 'root')!.valueString);
    const onChain = await t.ledger.chain!.anchoredAt(root);
    assert.ok(onChain, 'the root is in the contract');
    assert.equal(onChain.leafCount, size);
    assert.equal(onChain.blockNumber, param(p, 'blockNumber')!.valueInteger);
    assert.match(param(p, 'txHash')!.valueString!, /^0x[0-9a-f]{64}$/);
    assert.ok(Date.parse(param(p, 'blockTime')!.valueInstant!) > 0);
  });

  it('reports a changed stored hash and a changed ciphertext as a mismatch', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await request(t.app).post('/fhir/Observation').set('content-type', FHIR_JSON).send(JSON.stringify(obs(80 + i)))).body.id);
    await t.ledger.flush();
    const db = new Database(path.join(t.config.dataDir, 'custos.db'));
    try {
      db.prepare("UPDATE resource_version SET content_hash = ? WHERE type = 'Observation' AND id = ?").run('00'.repeat(32), ids[0]);
      const body = db.prepare("SELECT body FROM resource_version WHERE type = 'Observation' AND id = ?").pluck().get(ids[1]) as Buffer;
      body[body.length - 1] ^= 0x01;
      db.prepare("UPDATE resource_version SET body = ? WHERE type = 'Observation' AND id = ?").run(body, ids[1]);
    } finally {
      db.close();
    }
    const hashChanged = (await request(t.app).get(`/fhir/Observation/${ids[0]}/$verify`)).body as Parameters;
    assert.equal(param(hashChanged, 'status')?.valueCode, 'mismatch', JSON.stringify(hashChanged));
    const bodyChanged = (await request(t.app).get(`/fhir/Observation/${ids[1]}/$verify`)).body as Parameters;
    assert.equal(param(bodyChanged, 'status')?.valueCode, 'mismatch', JSON.stringify(bodyChanged));
    // A neighbour in the same batch: its own hash is fine, but the batch no longer gives its root.
    const neighbour = (await request(t.app).get(`/fhir/Observation/${ids[2]}/$verify`)).body as Parameters;
    assert.equal(param(neighbour, 'status')?.valueCode, 'mismatch');
    assert.match(param(neighbour, 'reason')!.valueString!, /root/);
  });

  it('$verify needs read access to the resource', async () => {
    const id = (await request(t.app).post('/fhir/Observation').set('content-type', FHIR_JSON).send(JSON.stringify(obs(70)))).body.id as string;
    const anonymous = await request(t.raw).get(`/fhir/Observation/${id}/$verify`);
    assert.equal(anonymous.status, 401);
    assert.equal((await request(t.app).get('/fhir/Observation/nope/$verify')).status, 404);
  });
});

describe('ledger off', () => {
  it('$verify says the ledger is off; $ledger-status reports mode off', async () => {
    const t = await testApp({ LEDGER: 'off' });
    try {
      const id = (await request(t.app).post('/fhir/Observation').set('content-type', FHIR_JSON).send(JSON.stringify({ resourceType: 'Observation', status: 'final', code: { text: 'x' } }))).body.id as string;
      const res = await request(t.app).get(`/fhir/Observation/${id}/$verify`);
      assert.equal(res.status, 400);
      assert.match(res.body.issue[0].diagnostics, /turned off/);
      const s = (await request(t.app).get('/fhir/$ledger-status')).body as Parameters;
      assert.equal(param(s, 'mode')?.valueCode, 'off');
    } finally {
      await t.close();
    }
  });
});

/** AuditEvents are versions like any other: hashed, batched, anchored, and verifiable with $verify. */
describe('AuditEvents on the ledger', () => {
  let t: TestApp;
  before(async () => {
    t = await testApp({ LEDGER: 'embedded', LEDGER_BATCH_SIZE: '4', LEDGER_BATCH_MS: '60000', AUDIT: 'on' });
  });
  after(async () => t.close());

  it('the AuditEvent of a read gets an inclusion proof that leads to the root on chain', async () => {
    const created = await request(t.app).post('/fhir/Observation').set('content-type', FHIR_JSON).send(JSON.stringify({ resourceType: 'Observation', status: 'final', code: { text: 'spo2' } }));
    assert.equal(created.status, 201);
    assert.equal((await request(t.app).get(`/fhir/Observation/${created.body.id}`)).status, 200);
    await t.audit!.flush();
    const events = (await request(t.app).get(`/fhir/AuditEvent?entity=Observation/${created.body.id}&subtype=read`)).body;
    assert.equal(events.entry?.length, 1, JSON.stringify(events));
    const id = events.entry[0].resource.id as string;
    // Fill the batch (size 4) with more writes, then anchor.
    for (let i = 0; i < 4; i++) assert.equal((await request(t.app).post('/fhir/Observation').set('content-type', FHIR_JSON).send(JSON.stringify({ resourceType: 'Observation', status: 'final', code: { text: `n${i}` } }))).status, 201);
    await t.audit!.flush();
    await t.ledger.flush();
    const res = await request(t.app).get(`/fhir/AuditEvent/${id}/$verify`);
    assert.equal(res.status, 200, res.text);
    const p = res.body as Parameters;
    assert.equal(param(p, 'status')?.valueCode, 'anchored', JSON.stringify(p));
    const root = rootFromInclusionProof(Buffer.from(param(p, 'contentHash')!.valueString!, 'hex'), param(p, 'leafIndex')!.valueInteger!,
      param(p, 'treeSize')!.valueInteger!, all(p, 'auditPath').map((x) => Buffer.from(x.valueString!, 'hex')))!;
    assert.equal(root.toString('hex'), param(p, 'root')!.valueString);
    assert.ok(await t.ledger.chain!.anchoredAt(root), 'the root is in the contract');
  });
});
