import fs from 'node:fs';
import path from 'node:path';
import { Wallet } from 'ethers';
import type { Logger } from 'pino';
import type { Store } from '../store/index.js';
import { AnchorRegistryClient } from './anchor-registry.js';
import { AnchorWorker } from './anchor-worker.js';
import { fund, loadOrCreateKey, startLocalNode, type LocalNode } from './anvil.js';
import { ProofBuilder } from './proofs.js';

export interface LedgerConfig {
  /** embedded: a local anvil under DATA_DIR; external: LEDGER_RPC_URL; off: no anchoring. */
  mode: 'embedded' | 'external' | 'off';
  rpcUrl?: string;
  /** Hex private key of the anchorer (external), or a file holding it. */
  privateKey?: string;
  keyFile?: string;
  /** AnchorRegistry address on the external chain. */
  contract?: string;
  /** The chain id the external RPC must report. */
  chainId?: number;
  /** Port of the embedded node (0 = a free one). */
  nodePort: number;
  batchSize: number;
  batchMs: number;
  confirmations: number;
}

export type VerifyStatus = 'pending' | 'anchored' | 'mismatch';

/** What $verify reports about one version. */
export interface VersionProof {
  resourceType: string;
  id: string;
  versionId: number;
  /** The hash recorded at write time (hex), and the one recomputed now from the stored bytes. */
  contentHash: string;
  recomputedHash?: string;
  status: VerifyStatus;
  reason?: string;
  batchId?: number;
  leafIndex?: number;
  treeSize?: number;
  auditPath?: string[];
  root?: string;
  chainId?: number;
  contract?: string;
  txHash?: string;
  blockNumber?: number;
  blockTime?: number;
}

export interface LedgerStatus {
  mode: LedgerConfig['mode'];
  chainId?: number;
  rpcUrl?: string;
  contract?: string;
  anchorer?: string;
  backlog: number;
  /** The last anchored (confirmed) batch. */
  lastBatch?: { id: number; size: number; status: string; txHash?: string; blockNumber?: number; blockTime?: number };
  lastError?: string;
}

/** What another user of the ledger's chain (the consent registry) needs to reach it. */
export interface LedgerChainAccess {
  mode: 'embedded' | 'external';
  rpcUrl: string;
  chainId: number;
  /** The anchorer's private key (0x hex): pays for transactions. */
  privateKey: string;
}

/**
 * Ledger anchoring for one store: the chain (embedded anvil or an external RPC), the contract,
 * the batching worker, and proofs.
 */
export class LedgerService {
  private proofs?: ProofBuilder;

  private constructor(
    private readonly o: { config: LedgerConfig; store: Store; logger: Logger },
    readonly chain?: AnchorRegistryClient,
    private readonly node?: LocalNode,
    private readonly worker?: AnchorWorker,
    private readonly access?: LedgerChainAccess,
  ) {}

  static async start(o: { config: LedgerConfig; dataDir: string; store: Store; logger: Logger; allowOrigin?: string }): Promise<LedgerService> {
    const { config, logger } = o;
    if (config.mode === 'off') return new LedgerService(o);
    let node: LocalNode | undefined;
    let chain: AnchorRegistryClient;
    let key: string;
    if (config.mode === 'embedded') {
      try {
        node = await startLocalNode({ stateDir: path.join(o.dataDir, 'chain'), port: config.nodePort || undefined, logger, ...(o.allowOrigin ? { allowOrigin: o.allowOrigin } : {}) });
      } catch (err) {
        throw new Error(`the embedded ledger node (anvil) could not start: ${(err as Error).message}. `
          + 'Set LEDGER_RPC_URL (and LEDGER_KEY, LEDGER_CONTRACT, LEDGER_CHAIN_ID) for an external chain, or LEDGER=off to run without anchoring.', { cause: err });
      }
      try {
        key = loadOrCreateKey(path.join(o.dataDir, 'keys', 'anchorer.key'));
        chain = await embeddedContract(node, key, o.dataDir, logger);
      } catch (err) {
        await node.stop();
        throw err;
      }
    } else {
      const given = config.privateKey ?? (config.keyFile ? fs.readFileSync(config.keyFile, 'utf8').trim() : undefined);
      if (!config.rpcUrl || !given || !config.contract || config.chainId === undefined) {
        throw new Error('an external ledger needs LEDGER_RPC_URL, LEDGER_KEY (or LEDGER_KEY_FILE), LEDGER_CONTRACT and LEDGER_CHAIN_ID');
      }
      key = given;
      chain = await AnchorRegistryClient.connect({ rpcUrl: config.rpcUrl, privateKey: key, address: config.contract, expectedChainId: config.chainId });
    }
    const worker = new AnchorWorker({
      store: o.store.ledger(), chain, batchSize: config.batchSize, batchMs: config.batchMs, confirmations: config.confirmations, logger,
      writeTurn: (fn) => o.store.writeTurn(fn),
    });
    // Roots of a chain that lost its state (embedded node restarted without it) are found and anchored again.
    await worker.recheckAll().catch((err: unknown) => logger.warn({ err: (err as Error).message }, 'ledger recheck failed; will retry'));
    worker.start();
    logger.info({ mode: config.mode, chainId: chain.chainId, contract: chain.address, anchorer: chain.anchorer, rpc: node?.rpcUrl }, 'ledger anchoring on');
    const access: LedgerChainAccess = { mode: config.mode, rpcUrl: node?.rpcUrl ?? config.rpcUrl!, chainId: chain.chainId, privateKey: key };
    return new LedgerService(o, chain, node, worker, access);
  }

  /** The chain's RPC URL, chain id and paying key, for other contracts on the same chain; undefined when the ledger is off. */
  chainAccess(): LedgerChainAccess | undefined {
    return this.access;
  }

  get mode(): LedgerConfig['mode'] {
    return this.o.config.mode;
  }

  /** Runs one batching round now; `force` anchors whatever waits without waiting for the thresholds. */
  async flush(force = false): Promise<void> {
    await this.worker?.runOnce(force);
  }

  status(): LedgerStatus {
    const ledger = this.o.store.ledger();
    const last = ledger.confirmedBatches(1)[0];
    return {
      mode: this.o.config.mode,
      ...(this.chain ? { chainId: this.chain.chainId, contract: this.chain.address, anchorer: this.chain.anchorer } : {}),
      ...(this.node ? { rpcUrl: this.node.rpcUrl } : {}),
      backlog: ledger.backlog(),
      ...(last ? { lastBatch: { id: last.id, size: last.size, status: last.status, txHash: last.txHash, blockNumber: last.blockNumber, blockTime: last.blockTime } } : {}),
      ...(this.worker?.lastError ? { lastError: this.worker.lastError } : {}),
    };
  }

  /**
   * Where one version stands: its recorded hash against a hash recomputed from what is stored
   * now, and its inclusion proof in an anchored batch. `recomputedHash` comes from the caller,
   * which decrypts the version.
   */
  async proof(resourceType: string, id: string, versionId: number, recomputedHash: string): Promise<VersionProof | undefined> {
    this.proofs ??= new ProofBuilder(this.o.store.ledger());
    return this.proofs.proof(resourceType, id, versionId, recomputedHash);
  }

  async stop(): Promise<void> {
    await this.worker?.stop();
    this.chain?.close();
    await this.node?.stop();
  }
}

interface ContractFile { address: string; chainId: number }

/**
 * The embedded node's contract: the address remembered in DATA_DIR/chain/contract.json, or a
 * fresh deployment when there is none or the node no longer has its code (state lost).
 */
async function embeddedContract(node: LocalNode, key: string, dataDir: string, logger: Logger): Promise<AnchorRegistryClient> {
  await fund(node.rpcUrl, new Wallet(key).address);
  const file = path.join(dataDir, 'chain', 'contract.json');
  let remembered: ContractFile | undefined;
  try {
    remembered = JSON.parse(fs.readFileSync(file, 'utf8')) as ContractFile;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (remembered) {
    try {
      return await AnchorRegistryClient.connect({ rpcUrl: node.rpcUrl, privateKey: key, address: remembered.address, expectedChainId: node.chainId });
    } catch (err) {
      logger.warn({ err: (err as Error).message, address: remembered.address }, 'the embedded chain lost the AnchorRegistry; deploying it again');
    }
  }
  const chain = await AnchorRegistryClient.deploy(node.rpcUrl, key);
  fs.writeFileSync(file, JSON.stringify({ address: chain.address, chainId: chain.chainId }, null, 2), { mode: 0o600 });
  return chain;
}
