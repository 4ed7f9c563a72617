/**
 * Ledger costs measured in-process: Merkle batching throughput (content hashes per second into
 * a tree with every inclusion proof) and gas of real anchor transactions on an anvil node
 * running the compiled AnchorRegistry, per anchored version at a given write rate (the batch
 * holds LEDGER_BATCH_MS worth of writes, at most LEDGER_BATCH_SIZE).
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { JsonRpcProvider, Wallet } from 'ethers';
import { AnchorRegistryClient } from '../src/ledger/anchor-registry.js';
import { fund, loadOrCreateKey, startLocalNode } from '../src/ledger/anvil.js';
import { MerkleTree } from '../src/ledger/merkle.js';

export interface LedgerCosts {
  merkle_hashes_per_s: number;
  merkle_batch_10000_ms: number;
  gas_per_anchor_tx: number;
  gas_per_version: Record<string, { batch_size: number; gas: number }>;
}

export async function measureLedgerCosts(o: { batchSize: number; batchMs: number; rates: number[] }): Promise<LedgerCosts> {
  // Batching: tree + every proof for 10,000 hashes, a few times.
  const hashes = Array.from({ length: 10_000 }, () => randomBytes(32));
  let best = Infinity;
  for (let i = 0; i < 5; i++) {
    const t0 = process.hrtime.bigint();
    const tree = new MerkleTree(hashes);
    for (let j = 0; j < tree.size; j++) tree.inclusionProof(j);
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e6);
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'custos-bench-ledger-'));
  const node = await startLocalNode({ stateDir: path.join(dir, 'chain') });
  try {
    const key = loadOrCreateKey(path.join(dir, 'anchorer.key'));
    await fund(node.rpcUrl, new Wallet(key).address);
    const chain = await AnchorRegistryClient.deploy(node.rpcUrl, key);
    const provider = new JsonRpcProvider(node.rpcUrl, undefined, { staticNetwork: true });
    const gas: number[] = [];
    const perRate: LedgerCosts['gas_per_version'] = {};
    for (const rate of o.rates) {
      const size = Math.max(1, Math.min(o.batchSize, Math.round((rate * o.batchMs) / 1000)));
      const receipt = await chain.anchor(randomBytes(32), size, BigInt(gas.length + 1));
      const used = Number((await provider.getTransactionReceipt(receipt.txHash))!.gasUsed);
      gas.push(used);
      perRate[`${rate}_writes_per_s`] = { batch_size: size, gas: Math.round((used / size) * 10) / 10 };
    }
    provider.destroy();
    chain.close();
    return {
      merkle_hashes_per_s: Math.round(10_000 / (best / 1000)),
      merkle_batch_10000_ms: Math.round(best * 10) / 10,
      gas_per_anchor_tx: Math.round(gas.reduce((a, b) => a + b, 0) / gas.length),
      gas_per_version: perRate,
    };
  } finally {
    await node.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
