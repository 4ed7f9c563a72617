import type { Logger } from 'pino';
import type { LedgerBatch as Batch, LedgerLeaf, LedgerStore } from '../store/index.js';
import { MerkleTree } from './merkle.js';

export interface AnchorReceipt { txHash: string; blockNumber: number; blockTime: number }
export interface AnchorRecord { blockNumber: number; blockTime: number; leafCount: number; batchId: bigint }

/** The chain side (AnchorRegistry contract). */
export interface AnchorChain {
  readonly chainId: number;
  readonly address: string;
  /** Sends the anchor transaction (`onSent` when it is in the node's pool) and waits for its confirmations. */
  anchor(root: Buffer, leafCount: number, batchId: bigint, confirmations?: number, onSent?: (txHash: string) => void): Promise<AnchorReceipt>;
  anchoredAt(root: Buffer): Promise<AnchorRecord | undefined>;
  /** The transaction that anchored a root already on chain (after a crash lost the receipt). */
  anchorTx(root: Buffer): Promise<AnchorReceipt | undefined>;
}

export interface AnchorWorkerOptions {
  store: LedgerStore;
  chain: AnchorChain;
  /** A batch is cut when this many versions wait... */
  batchSize: number;
  /** ...or when the oldest waiting one has waited this long. */
  batchMs: number;
  confirmations: number;
  logger: Logger;
  /** How often confirmed roots are checked against the chain (a node restarted without its state). */
  recheckMs?: number;
  /** Runs the store's writes in the server's turn at the write lock (Store.writeTurn). */
  writeTurn?: <T>(fn: () => T) => Promise<T>;
}

const RETRY_MAX_MS = 30_000;

/**
 * Batches unanchored versions into Merkle trees and anchors each root in one transaction.
 * Crash-safe by construction: a batch is recorded (pending) before its transaction is sent,
 * and on every start open batches are first looked up on the chain, so nothing is anchored
 * twice and nothing is lost; if the chain is unreachable, writes go on and the backlog waits.
 */
export class AnchorWorker {
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private stopped = false;
  private waitingSince?: number;
  private failures = 0;
  private lastRecheck = 0;
  lastError?: string;

  constructor(private readonly o: AnchorWorkerOptions) {}

  start(): void {
    this.stopped = false;
    this.schedule(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
  }

  private queue: Promise<void> = Promise.resolve();

  /**
   * One round: finish open batches, check old roots, cut and anchor new batches. Rounds never
   * overlap (the timer's and an explicit flush wait for each other), so a root is sent once.
   */
  runOnce(force = false): Promise<void> {
    const round = this.queue.catch(() => undefined).then(() => this.round(force));
    this.queue = round;
    return round;
  }

  /** `force`: cut a batch from whatever waits, without waiting for the size or age threshold. */
  private async round(force: boolean): Promise<void> {
    for (const b of this.o.store.openBatches()) await this.settle(b);
    await this.recheckIfDue();
    for (;;) {
      const backlog = this.o.store.backlog();
      if (backlog === 0) {
        this.waitingSince = undefined;
        return;
      }
      this.waitingSince ??= Date.now();
      if (!force && backlog < this.o.batchSize && Date.now() - this.waitingSince < this.o.batchMs) return;
      const leaves = this.o.store.unbatched(this.o.batchSize);
      if (leaves.length === 0) return;
      const tree = new MerkleTree(leaves.map((l) => l.hash));
      const batch = await this.write(() => this.o.store.createBatch({
        ...leafRanges(leaves), size: leaves.length, root: tree.root,
        chainId: this.o.chain.chainId, contract: this.o.chain.address,
      }));
      this.waitingSince = leaves.length < backlog ? Date.now() : undefined;
      await this.settle(batch);
      if (this.stopped) return;
    }
  }

  /** Brings a pending or submitted batch to confirmed, without anchoring a root twice. */
  private async settle(b: Batch): Promise<void> {
    const onChain = await this.o.chain.anchoredAt(b.root);
    if (onChain) {
      if (onChain.leafCount !== b.size) throw new Error(`batch ${b.id}: the chain holds its root with ${onChain.leafCount} leaves, not ${b.size}`);
      const txHash = b.txHash ?? (await this.o.chain.anchorTx(b.root))?.txHash ?? '';
      await this.write(() => this.o.store.markConfirmed(b.id, { txHash, blockNumber: onChain.blockNumber, blockTime: onChain.blockTime, ...this.chainRef() }));
      return;
    }
    // submitted as soon as the transaction is sent: a crash while waiting leaves a batch whose
    // tx hash is known and whose root the next round finds on chain.
    const receipt = await this.o.chain.anchor(b.root, b.size, BigInt(b.id), this.o.confirmations, (txHash) => this.o.store.markSubmitted(b.id, txHash));
    await this.write(() => this.o.store.markConfirmed(b.id, { ...receipt, ...this.chainRef() }));
    this.o.logger.info({ batch: b.id, size: b.size, tx: receipt.txHash, block: receipt.blockNumber }, 'ledger batch anchored');
  }

  private write<T>(fn: () => T): Promise<T> {
    return this.o.writeTurn ? this.o.writeTurn(fn) : Promise.resolve(fn());
  }

  private chainRef(): { chainId: number; contract: string } {
    return { chainId: this.o.chain.chainId, contract: this.o.chain.address };
  }

  /** Roots recorded as confirmed must still be on the chain (a local node may have lost its state). */
  private async recheckIfDue(): Promise<void> {
    const every = this.o.recheckMs ?? 60_000;
    if (Date.now() - this.lastRecheck < every) return;
    this.lastRecheck = Date.now();
    await this.recheckAll();
  }

  /**
   * Checks confirmed batches against the chain, newest first: a node that lost state loses its
   * newest blocks first, so the walk stops at the first root still there (a batch recorded
   * under another contract is always checked). Missing roots go back to pending. Returns how many.
   */
  async recheckAll(): Promise<number> {
    let missing = 0;
    let before: number | undefined;
    outer: for (;;) {
      const page = this.o.store.confirmedBatches(500, before);
      if (page.length === 0) break;
      for (const b of page) {
        const sameContract = b.contract === this.o.chain.address && b.chainId === this.o.chain.chainId;
        if (sameContract && (await this.o.chain.anchoredAt(b.root))) break outer;
        if (!sameContract && (await this.o.chain.anchoredAt(b.root))) continue;
        await this.write(() => this.o.store.markPending(b.id));
        missing++;
      }
      before = page[page.length - 1]!.id;
    }
    if (missing > 0) this.o.logger.warn({ missing }, 'anchored roots missing from the chain; anchoring them again');
    return missing;
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.runOnce().then(() => {
        this.failures = 0;
        this.lastError = undefined;
      }, (err: unknown) => {
        this.failures++;
        this.lastError = (err as Error)?.message ?? String(err);
        this.o.logger.warn({ err: this.lastError, failures: this.failures }, 'ledger anchoring failed; will retry');
      }).finally(() => {
        const backoff = this.failures === 0 ? Math.min(this.o.batchMs, 500) : Math.min(RETRY_MAX_MS, 500 * 2 ** Math.min(this.failures, 6));
        this.schedule(backoff);
      });
    }, ms);
    this.timer.unref?.();
  }
}

/** The version range (empty: first > last) and the audit journal range of a batch's leaves. */
function leafRanges(leaves: LedgerLeaf[]): { firstSeq: number; lastSeq: number; auditFirst?: number; auditLast?: number } {
  const versions = leaves.filter((l) => !l.audit);
  const audit = leaves.filter((l) => l.audit);
  return {
    firstSeq: versions[0]?.seq ?? 1, lastSeq: versions[versions.length - 1]?.seq ?? 0,
    ...(audit.length ? { auditFirst: audit[0]!.seq, auditLast: audit[audit.length - 1]!.seq } : {}),
  };
}
