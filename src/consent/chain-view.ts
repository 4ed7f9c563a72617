/**
 * The server's view of ConsentRegistry (contracts/ConsentRegistry.sol): which Consent content
 * hashes each pseudonymous patient id has active, which key each one has bound, and where the
 * last grant/revocation of each (pid, hash) landed. It follows the contract's events with
 * `eth_getLogs` from the deployment block, in the background (every CONSENT_SYNC_MS / 2) and on
 * demand: `fresh()` reads new events first when the last successful read is older than
 * CONSENT_SYNC_MS, and throws {@link ConsentChainUnavailableError} when the chain cannot be read,
 * so a decision is never made on a view older than that.
 *
 * Reorganisations and a chain reset (the block we stopped at is gone or has another hash) make
 * the view start again from the deployment block.
 */
import { hkdfSync } from 'node:crypto';
import { getAddress, type JsonRpcProvider, type Log } from 'ethers';
import type { Logger } from 'pino';
import { makeProvider } from '../ledger/evm-rpc.js';
import { pseudonymousId, type ConsentRegistryClient } from './consent-registry.js';
import type { ChainConsentState, ConsentChainView } from './types.js';

/** The chain could not be read and the view is older than CONSENT_SYNC_MS: no consent decision can be made (HTTP 503). */
export class ConsentChainUnavailableError extends Error {
  override readonly name = 'ConsentChainUnavailableError';
}

/**
 * The secret under which Patient references become pseudonymous ids on chain: HKDF-SHA-256 of the
 * server's key material (the same master key, so it survives restarts), never stored on chain.
 * `indexKey` is MasterKeys.indexKey (itself HKDF of the master key); the distinct info string keeps
 * the two unrelated.
 */
export function consentPidSecret(indexKey: Buffer): Buffer {
  if (!Buffer.isBuffer(indexKey) || indexKey.length < 32) throw new TypeError('indexKey must be a 32-byte Buffer');
  return Buffer.from(hkdfSync('sha256', indexKey, Buffer.alloc(0), 'custos/consent-pid/v1', 32));
}

/** Where the last ConsentGranted/ConsentRevoked of one (pid, hash) landed. */
export interface ConsentEventRecord {
  event: 'granted' | 'revoked';
  txHash: string;
  blockNumber: number;
}

export interface ChainConsentViewOptions {
  /** The contract (its address, chain id and ABI); closed with the view. */
  client: ConsentRegistryClient;
  /** JSON-RPC URL of a node of the client's chain (for eth_getLogs and blocks). */
  rpcUrl: string;
  /** Secret of the pseudonymous ids (see {@link consentPidSecret}). */
  secret: Buffer;
  /** CONSENT_SYNC_MS: the view is never older than this when `fresh()` resolves. */
  syncMs: number;
  /** The contract's deployment block (events are read from here). */
  fromBlock: number;
  logger?: Logger;
  /** Largest eth_getLogs block range (default 10 000; halved when the node refuses a range). */
  maxBlockRange?: number;
  /** Background polling interval (default max(100, syncMs / 2) ms); 0 = no background polling. */
  pollMs?: number;
}

const PID_CACHE_MAX = 100_000;
const BARE_HASH = /^(?:0x)?([0-9a-fA-F]{64})$/;

/** Hex without 0x, lower case (as the store records content hashes). */
function bare(hash: string): string {
  const m = BARE_HASH.exec(hash);
  if (!m) throw new TypeError(`not a 32-byte hex hash: ${String(hash).slice(0, 80)}`);
  return m[1]!.toLowerCase();
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** ConsentRegistry events, folded into per-pid state. */
export class ChainConsentView implements ConsentChainView {
  readonly mode = 'required' as const;
  readonly client: ConsentRegistryClient;
  private readonly provider: JsonRpcProvider;
  private readonly pidCache = new Map<string, string>();
  private readonly keys = new Map<string, string>();
  private readonly active = new Map<string, Set<string>>();
  private readonly last = new Map<string, ConsentEventRecord>();
  private readonly recoveries = new Map<string, { newKey: string; executableAt: number }>();
  private gen = 0;
  /** Last block whose events are folded in, and its hash (reorg detection); -1 = none yet. */
  private cursor = { number: -1, hash: '' };
  /** Date.now() when the last successful sync started (what it read is at least this recent). */
  private syncedAt = 0;

  /** Seconds since the last successful sync started (how old the view may be); undefined before the first. */
  get ageSeconds(): number | undefined {
    return this.syncedAt > 0 ? (Date.now() - this.syncedAt) / 1000 : undefined;
  }
  private inflight?: { startedAt: number; promise: Promise<void> };
  private range: number;
  private timer?: NodeJS.Timeout;
  private closed = false;
  private failure?: string;

  constructor(private readonly o: ChainConsentViewOptions) {
    if (!Number.isSafeInteger(o.fromBlock) || o.fromBlock < 0) throw new RangeError(`fromBlock must be a block number, got ${o.fromBlock}`);
    this.client = o.client;
    this.provider = makeProvider(o.rpcUrl, o.client.chainId, {});
    this.range = Math.max(1, o.maxBlockRange ?? 10_000);
  }

  /** A view that has read every event so far and polls in the background. */
  static async open(o: ChainConsentViewOptions): Promise<ChainConsentView> {
    const view = new ChainConsentView(o);
    try {
      await view.sync();
    } catch (err) {
      await view.close();
      throw err;
    }
    view.startPolling();
    return view;
  }

  get generation(): number {
    return this.gen;
  }

  /** The contract address and chain id this view follows. */
  get contract(): { address: string; chainId: number } {
    return { address: this.o.client.address, chainId: this.o.client.chainId };
  }

  /** The last block folded into the view. */
  get blockNumber(): number {
    return this.cursor.number;
  }

  /** Why the last background sync failed (cleared by a successful one). */
  get lastError(): string | undefined {
    return this.failure;
  }

  /** The pseudonymous id of Patient/`patientId` (0x bytes32). */
  pid(patientId: string): string {
    let pid = this.pidCache.get(patientId);
    if (pid === undefined) {
      pid = pseudonymousId(this.o.secret, `Patient/${patientId}`);
      if (this.pidCache.size >= PID_CACHE_MAX) this.pidCache.clear();
      this.pidCache.set(patientId, pid);
    }
    return pid;
  }

  async fresh(): Promise<void> {
    if (this.closed) throw new ConsentChainUnavailableError('the consent chain view is closed (the server is stopping)');
    const since = Date.now() - this.o.syncMs;
    if (this.syncedAt >= since && this.syncedAt > 0) return;
    await this.syncOrThrow(since);
  }

  /** Reads new events now (joins a read that started after this call); throws {@link ConsentChainUnavailableError}. */
  async sync(): Promise<void> {
    await this.syncOrThrow(Date.now());
  }

  private async syncOrThrow(since: number): Promise<void> {
    try {
      await this.syncSince(since);
    } catch (err) {
      if (err instanceof ConsentChainUnavailableError) throw err;
      const age = this.syncedAt ? `${Math.round((Date.now() - this.syncedAt) / 100) / 10} s ago` : 'never';
      throw new ConsentChainUnavailableError(
        `The consent chain cannot be read (ConsentRegistry ${this.o.client.address} on chain ${this.o.client.chainId}): ${(err as Error).message}. `
        + `Consent decisions need a view no older than ${this.o.syncMs} ms (last read: ${age}); try again later.`,
        { cause: err },
      );
    }
  }

  /** Resolves once the view includes block `blockNumber` (e.g. of a transaction just relayed); throws after `timeoutMs`. */
  async waitForBlock(blockNumber: number, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      await this.sync();
      if (this.cursor.number >= blockNumber) return;
      if (Date.now() > deadline) throw new ConsentChainUnavailableError(`the consent chain view did not reach block ${blockNumber} within ${timeoutMs} ms (it is at ${this.cursor.number})`);
      await sleep(50);
    }
  }

  isActive(patientId: string, contentHash: string): boolean {
    return this.isActivePid(this.pid(patientId), contentHash);
  }

  /** Whether `contentHash` is active for the pseudonymous id `pid` (as of the last sync). */
  isActivePid(pid: string, contentHash: string): boolean {
    return this.active.get(pid.toLowerCase())?.has(bare(contentHash)) ?? false;
  }

  /** The key bound to `pid` as of the last sync. */
  keyOf(pid: string): string | undefined {
    return this.keys.get(pid.toLowerCase());
  }

  /** The last grant/revocation of (pid, hash) as of the last sync. */
  lastEvent(pid: string, contentHash: string): ConsentEventRecord | undefined {
    return this.last.get(`${pid.toLowerCase()}:${bare(contentHash)}`);
  }

  /** The pending operator recovery of `pid` as of the last sync. */
  pendingRecovery(pid: string): { newKey: string; executableAt: number } | undefined {
    return this.recoveries.get(pid.toLowerCase());
  }

  async status(patientId: string, contentHash: string): Promise<ChainConsentState> {
    await this.fresh();
    const pid = this.pid(patientId);
    const key = this.keyOf(pid);
    if (!key) return { state: 'no-key', pid };
    const ev = this.lastEvent(pid, contentHash);
    const where = ev ? { txHash: ev.txHash, blockNumber: ev.blockNumber } : {};
    if (this.isActivePid(pid, contentHash)) return { state: 'active', pid, key, ...where };
    if (ev?.event === 'revoked') return { state: 'revoked', pid, key, ...where };
    return { state: 'pending-signature', pid, key };
  }

  /**
   * The chain's "now" in unix seconds, for signature deadlines: the latest block's time, or the
   * wall clock when that is later (a local node mines only on demand, so its last block may be old).
   */
  async chainTime(): Promise<number> {
    const b = await this.provider.getBlock('latest');
    if (!b) throw new Error('the node returned no latest block');
    return Math.max(b.timestamp, Math.floor(Date.now() / 1000));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    await this.inflight?.promise.catch(() => undefined);
    this.provider.destroy();
    this.o.client.close();
  }

  // -------------------------------------------------------------------------------------------

  private startPolling(): void {
    const every = this.o.pollMs ?? Math.max(100, Math.floor(this.o.syncMs / 2));
    if (every <= 0) return;
    const tick = () => {
      if (this.closed) return;
      this.sync().then(() => {
        if (this.failure) this.o.logger?.info({ contract: this.o.client.address }, 'the consent chain can be read again');
        this.failure = undefined;
      }, (err: unknown) => {
        const msg = (err as Error).message;
        if (this.failure !== msg) this.o.logger?.warn({ err: msg, contract: this.o.client.address }, 'reading the consent chain failed; retrying');
        this.failure = msg;
      }).finally(() => {
        if (this.closed) return;
        this.timer = setTimeout(tick, every);
        this.timer.unref();
      });
    };
    this.timer = setTimeout(tick, every);
    this.timer.unref();
  }

  /** Ensures a sync that started at or after `since` has completed (joining one in flight when it qualifies). */
  private async syncSince(since: number): Promise<void> {
    for (;;) {
      if (this.syncedAt >= since && this.syncedAt > 0) return;
      const running = this.inflight;
      if (running && running.startedAt >= since) return running.promise;
      if (running) {
        await running.promise.catch(() => undefined);
        continue;
      }
      if (this.closed) throw new ConsentChainUnavailableError('the consent chain view is closed');
      const startedAt = Date.now();
      const promise = this.readEvents().then(() => {
        this.syncedAt = Math.max(this.syncedAt, startedAt);
      });
      const entry = { startedAt, promise };
      this.inflight = entry;
      promise.then(() => undefined, () => undefined).finally(() => {
        if (this.inflight === entry) this.inflight = undefined;
      });
      return promise;
    }
  }

  private async readEvents(): Promise<void> {
    const latest = await this.provider.getBlock('latest');
    if (!latest || latest.hash === null) throw new Error('the node returned no latest block');
    if (latest.number === this.cursor.number && latest.hash === this.cursor.hash) return;
    if (this.cursor.number >= 0) {
      // Still on the chain we followed? (a reorg or a reset node changes the block we stopped at)
      const ours = latest.number >= this.cursor.number ? (latest.number === this.cursor.number ? latest : await this.provider.getBlock(this.cursor.number)) : null;
      if (!ours || ours.hash !== this.cursor.hash) {
        this.o.logger?.warn({ block: this.cursor.number, latest: latest.number, contract: this.o.client.address }, 'the consent chain changed under the view (reorganisation or reset); reading it again from the deployment block');
        this.reset();
      }
    }
    const logs: Log[] = [];
    let from = Math.max(this.o.fromBlock, this.cursor.number + 1);
    while (from <= latest.number) {
      const to = Math.min(latest.number, from + this.range - 1);
      let batch: Log[];
      try {
        batch = await this.provider.getLogs({ address: this.o.client.address, fromBlock: from, toBlock: to });
      } catch (err) {
        if (this.range > 1 && /range|limit|too many|exceed|size/i.test((err as Error).message)) {
          this.range = Math.max(1, Math.floor(this.range / 2));
          continue;
        }
        throw err;
      }
      logs.push(...batch);
      from = to + 1;
    }
    // Check that what we read hangs together with the block we started from (a reorg while reading).
    const end = latest.number > this.cursor.number + 1 || logs.length ? await this.provider.getBlock(latest.number) : latest;
    if (!end || end.hash !== latest.hash) throw new Error('the chain reorganised while its events were read; will read again');
    logs.sort((a, b) => a.blockNumber - b.blockNumber || a.index - b.index);
    for (const log of logs) this.apply(log);
    this.cursor = { number: latest.number, hash: latest.hash };
  }

  private reset(): void {
    this.keys.clear();
    this.active.clear();
    this.last.clear();
    this.recoveries.clear();
    this.cursor = { number: -1, hash: '' };
    this.gen++;
  }

  private apply(log: Log): void {
    if (log.removed) return;
    let parsed;
    try {
      parsed = this.o.client.interface.parseLog({ topics: [...log.topics], data: log.data });
    } catch {
      return; // not one of ours
    }
    if (!parsed) return;
    const pid = String(parsed.args[0]).toLowerCase();
    switch (parsed.name) {
      case 'KeyBound': {
        const key = getAddress(String(parsed.args[1]));
        this.keys.set(pid, key);
        if (this.recoveries.get(pid)?.newKey === key) this.recoveries.delete(pid);
        break;
      }
      case 'ConsentGranted':
      case 'ConsentRevoked': {
        const hash = bare(String(parsed.args[1]));
        let set = this.active.get(pid);
        if (parsed.name === 'ConsentGranted') {
          if (!set) this.active.set(pid, (set = new Set()));
          set.add(hash);
        } else {
          set?.delete(hash);
          if (set?.size === 0) this.active.delete(pid);
        }
        this.last.set(`${pid}:${hash}`, { event: parsed.name === 'ConsentGranted' ? 'granted' : 'revoked', txHash: log.transactionHash, blockNumber: log.blockNumber });
        break;
      }
      case 'RecoveryProposed':
        this.recoveries.set(pid, { newKey: getAddress(String(parsed.args[1])), executableAt: Number(parsed.args[2]) });
        break;
      case 'RecoveryCancelled':
        this.recoveries.delete(pid);
        break;
      default:
        return; // OwnershipTransferred etc.: no change to the view
    }
    this.gen++;
  }
}
