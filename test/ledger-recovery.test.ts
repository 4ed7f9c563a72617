import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import request from 'supertest';
import { Wallet } from 'ethers';
import type { Parameters } from '@medplum/fhirtypes';
import { AnchorRegistryClient } from '../src/ledger/anchor-registry.js';
import { AnchorWorker, type AnchorChain } from '../src/ledger/anchor-worker.js';
import { createLogger } from '../src/logger.js';
import { fund, loadOrCreateKey, startLocalNode, type LocalNode } from '../src/ledger/anvil.js';
import { FHIR_JSON, freePort, tempDir, testApp } from './helpers.js';

type TestApp = Awaited<ReturnType<typeof testApp>>;
const param = (p: Parameters, name: string) => p.parameter?.find((x) => x.name === name);
const obs = (v: number) => JSON.stringify({ resourceType: 'Observation', status: 'final', code: { text: 'hr' }, valueQuantity: { value: v } });

async function create(t: TestApp, n: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const r = await request(t.app).post('/fhir/Observation').set('content-type', FHIR_JSON).send(obs(60 + i));
    assert.equal(r.status, 201, r.text);
    ids.push(r.body.id as string);
  }
  return ids;
}

async function status(t: TestApp, id: string): Promise<Parameters> {
  const r = await request(t.app).get(`/fhir/Observation/${id}/$verify`);
  assert.equal(r.status, 200, r.text);
  return r.body as Parameters;
}

const nodes: LocalNode[] = [];
after(async () => { for (const n of nodes) await n.stop(); });

describe('ledger recovery', () => {
  it('anchors the outbox left by a stopped server after restart, and a batch recorded but not sent exactly once', async () => {
    // AUDIT off in this file: the AuditEvents of the status reads would join the backlog counted here.
    const env = { LEDGER: 'embedded', LEDGER_BATCH_SIZE: '1000', LEDGER_BATCH_MS: '600000', AUDIT: 'off' };
    const first = await testApp(env);
    const dataDir = first.config.dataDir;
    const ids = await create(first, 4);
    // Crash window: the batch is recorded (pending) but its transaction was never sent.
    const ledger = first.store.ledger();
    const leaves = ledger.unbatched(2);
    const { MerkleTree } = await import('../src/ledger/merkle.js');
    ledger.createBatch({ firstSeq: leaves[0]!.seq, lastSeq: leaves[1]!.seq, size: 2, root: new MerkleTree(leaves.map((l) => l.hash)).root, chainId: first.ledger.chain!.chainId, contract: first.ledger.chain!.address });
    await first.close();

    const again = await testApp({ ...env, DATA_DIR: dataDir });
    try {
      await again.ledger.flush();
      // Still below the size threshold and the age threshold: the rest waits; the open batch is settled.
      assert.equal(again.ledger.status().lastBatch?.status, 'confirmed');
      assert.equal(param(await status(again, ids[0]!), 'status')?.valueCode, 'anchored');
      assert.equal(param(await status(again, ids[3]!), 'status')?.valueCode, 'pending');
      // A second round anchors nothing twice (AlreadyAnchored would fail the round).
      await again.ledger.flush();
      assert.equal(again.store.ledger().openBatches().length, 0);
      // A forced round anchors what waits without the thresholds.
      await again.ledger.flush(true);
      assert.equal(param(await status(again, ids[3]!), 'status')?.valueCode, 'anchored');
      assert.equal(again.ledger.status().backlog, 0);
    } finally {
      await again.close();
    }
  });

  it('records a batch as submitted with its tx hash as soon as it is sent; a crash before the receipt is settled from the chain', async () => {
    const t = await testApp({ LEDGER: 'embedded', LEDGER_BATCH_SIZE: '1000', LEDGER_BATCH_MS: '600000', AUDIT: 'off' });
    try {
      const ids = await create(t, 2);
      const real = t.ledger.chain!;
      let sent: string | undefined;
      const crashing: AnchorChain = {
        chainId: real.chainId, address: real.address,
        anchoredAt: (r) => real.anchoredAt(r), anchorTx: (r) => real.anchorTx(r),
        anchor: async (root, count, id, confirmations, onSent) => {
          await real.anchor(root, count, id, confirmations, (h) => { sent = h; onSent?.(h); });
          throw new Error('the process died before the receipt was recorded');
        },
      };
      const worker = new AnchorWorker({ store: t.store.ledger(), chain: crashing, batchSize: 1000, batchMs: 600_000, confirmations: 1, logger: createLogger('silent') });
      await assert.rejects(worker.runOnce(true), /died/);
      assert.match(sent ?? '', /^0x[0-9a-f]{64}$/);
      const batch = t.store.ledger().lastBatch()!;
      assert.ok(batch.status === 'submitted' || batch.status === 'confirmed', batch.status);
      assert.equal(batch.txHash, sent, 'the tx hash was recorded when the transaction was sent');
      await t.ledger.flush();
      assert.equal(t.store.ledger().openBatches().length, 0);
      assert.equal(t.ledger.status().lastBatch?.txHash, sent, 'confirmed from the chain, not sent twice');
      assert.equal(param(await status(t, ids[0]!), 'status')?.valueCode, 'anchored');
    } finally {
      await t.close();
    }
  });

  it('keeps accepting writes while the chain is down, and anchors the backlog when it returns', async () => {
    const port = await freePort();
    const stateDir = tempDir('custos-chain-');
    let node = await startLocalNode({ stateDir, port });
    nodes.push(node);
    const key = loadOrCreateKey(path.join(tempDir('custos-key-'), 'anchorer.key'));
    await fund(node.rpcUrl, new Wallet(key).address);
    const deployed = await AnchorRegistryClient.deploy(node.rpcUrl, key);
    const address = deployed.address;
    deployed.close();
    const t = await testApp({ LEDGER: 'on', LEDGER_RPC_URL: node.rpcUrl, LEDGER_KEY: key, LEDGER_CONTRACT: address, LEDGER_CHAIN_ID: String(node.chainId), LEDGER_BATCH_SIZE: '3', LEDGER_BATCH_MS: '600000', CONSENT_CHAIN: 'off', AUDIT: 'off' });
    try {
      assert.equal(t.ledger.status().mode, 'external');
      const before = await create(t, 3);
      await t.ledger.flush();
      assert.equal(param(await status(t, before[0]!), 'status')?.valueCode, 'anchored');

      await node.stop();
      const during = await create(t, 3); // writes do not depend on the chain
      await assert.rejects(t.ledger.flush(), 'anchoring fails while the chain is down');
      assert.ok(t.ledger.status().backlog >= 3 || t.store.ledger().openBatches().length > 0);
      assert.equal(param(await status(t, during[0]!), 'status')?.valueCode, 'pending');

      node = await startLocalNode({ stateDir, port });
      nodes.push(node);
      await t.ledger.flush();
      assert.equal(param(await status(t, during[2]!), 'status')?.valueCode, 'anchored');
      assert.equal(t.ledger.status().backlog, 0);
      assert.equal(param(await status(t, before[0]!), 'status')?.valueCode, 'anchored', 'the first batch survived the node restart (state kept)');
    } finally {
      await t.close();
    }
  });

  it('anchors again what an embedded node lost with its state (contract redeployed, roots re-anchored)', async () => {
    const env = { LEDGER: 'embedded', LEDGER_BATCH_SIZE: '2', LEDGER_BATCH_MS: '600000', AUDIT: 'off' };
    const first = await testApp(env);
    const dataDir = first.config.dataDir;
    const ids = await create(first, 2);
    await first.ledger.flush();
    const p1 = await status(first, ids[0]!);
    assert.equal(param(p1, 'status')?.valueCode, 'anchored');
    await first.close();
    // The node's state is gone (as after a restart without its state file).
    for (const f of fs.readdirSync(path.join(dataDir, 'chain'))) if (f.startsWith('anvil-state')) fs.rmSync(path.join(dataDir, 'chain', f));

    const again = await testApp({ ...env, DATA_DIR: dataDir });
    try {
      // The recheck at start put the lost batch back to pending; the worker anchors it again.
      await again.ledger.flush();
      assert.equal(again.store.ledger().openBatches().length, 0);
      const p2 = await status(again, ids[0]!);
      assert.equal(param(p2, 'status')?.valueCode, 'anchored');
      assert.equal(param(p2, 'root')?.valueString, param(p1, 'root')?.valueString, 'same tree, anchored again');
      const onChain = await again.ledger.chain!.anchoredAt(Buffer.from(param(p2, 'root')!.valueString!, 'hex'));
      assert.equal(onChain?.leafCount, 2);
    } finally {
      await again.close();
    }
  });
});
