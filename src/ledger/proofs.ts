import type { LedgerBatch, LedgerStore } from '../store/index.js';
import { MerkleTree } from './merkle.js';
import type { VersionProof } from './service.js';

const TREE_CACHE = 16;

/**
 * Inclusion proofs of stored versions in their anchored batches, from the ledger's records alone
 * (no chain access): what $verify answers and `custos audit export` attaches. Trees of recently
 * used batches are kept.
 */
export class ProofBuilder {
  private readonly trees = new Map<number, MerkleTree>();

  constructor(private readonly ledger: Pick<LedgerStore, 'position' | 'leaves'>) {}

  /** `recomputedHash` comes from the caller, which decrypts the version. */
  proof(resourceType: string, id: string, versionId: number, recomputedHash: string): VersionProof | undefined {
    const pos = this.ledger.position(resourceType, id, versionId);
    if (!pos) return undefined;
    const base: VersionProof = { resourceType, id, versionId, contentHash: pos.contentHash, recomputedHash, status: 'pending' };
    if (recomputedHash !== pos.contentHash) return { ...base, status: 'mismatch', reason: 'the stored version no longer hashes to the hash recorded when it was written' };
    const b = pos.batch;
    if (!b || pos.leafIndex === undefined) return { ...base, reason: 'not yet in an anchored batch' };
    const tree = this.tree(b);
    const proof = {
      ...base, batchId: b.id, leafIndex: pos.leafIndex, treeSize: b.size, auditPath: tree.inclusionProof(pos.leafIndex).map((h) => h.toString('hex')),
      root: b.root.toString('hex'), chainId: b.chainId, contract: b.contract, txHash: b.txHash, blockNumber: b.blockNumber, blockTime: b.blockTime,
    };
    if (!tree.root.equals(b.root)) return { ...proof, status: 'mismatch', reason: 'the batch\'s stored hashes no longer give its anchored root' };
    if (b.status !== 'confirmed') return { ...proof, reason: `batch ${b.id} is ${b.status}` };
    return { ...proof, status: 'anchored' };
  }

  private tree(b: LedgerBatch): MerkleTree {
    let t = this.trees.get(b.id);
    if (!t) {
      t = new MerkleTree(this.ledger.leaves(b).map((l) => l.hash));
      if (this.trees.size >= TREE_CACHE) this.trees.delete(this.trees.keys().next().value!);
      this.trees.set(b.id, t);
    }
    return t;
  }
}
