import { randomBytes } from 'node:crypto';
import {
  Contract,
  ContractFactory,
  getAddress,
  hexlify,
  Interface,
  JsonRpcProvider,
  Wallet,
  type InterfaceAbi,
  type TransactionReceipt,
} from 'ethers';
import { loadArtifact } from './contract-artifacts.js';
import { decodeRevert, isNonceProblem, makeProvider, pendingNonce, rpcChainId, SerialSender } from './evm-rpc.js';

/** Where an anchor transaction landed. */
export interface AnchorReceipt {
  txHash: string;
  blockNumber: number;
  /** Block timestamp, unix seconds. */
  blockTime: number;
}

/** What the contract holds for a root. */
export interface AnchorRecord {
  blockNumber: number;
  /** Block timestamp, unix seconds. */
  blockTime: number;
  leafCount: number;
  batchId: bigint;
}

export interface ClientOptions {
  /** How long {@link AnchorRegistryClient.anchor} and friends wait for confirmations (default 300 000 ms; 0 = forever). */
  txTimeoutMs?: number;
  /** Block polling interval while waiting for confirmations (default 1000 ms). */
  pollingIntervalMs?: number;
}

/** The contract's custom errors, by name. */
export type AnchorRegistryRevert = 'NotOwner' | 'NotAnchorer' | 'ZeroRoot' | 'ZeroLeafCount' | 'ZeroAddress' | 'AlreadyAnchored';

/**
 * A transaction or call the contract rejected; `reason` is the custom error's name and `args`
 * its decoded arguments (e.g. AlreadyAnchored: [root, blockNumber]). Anything else (network
 * down, timeout, out of funds) is thrown as ethers' own error.
 */
export class AnchorRegistryError extends Error {
  override readonly name = 'AnchorRegistryError';
  constructor(
    readonly reason: AnchorRegistryRevert | 'reverted',
    readonly args: readonly unknown[],
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

const CONTRACT_NAME = 'AnchorRegistry';
const UINT64_MAX = (1n << 64n) - 1n;
const DEFAULT_TX_TIMEOUT_MS = 300_000;

function rootHex(root: Buffer | Uint8Array): string {
  if (!(root instanceof Uint8Array) || root.length !== 32) throw new TypeError('root must be 32 bytes');
  return hexlify(root);
}

/**
 * Client for `contracts/AnchorRegistry.sol` (ethers v6). Transactions from one client are
 * sent one at a time, each with the account's pending nonce read from the node just before
 * sending (retried on nonce errors), so a node restarted without its state, a transaction that
 * failed, or another process using the same key does not wedge it.
 */
export class AnchorRegistryClient {
  readonly address: string;
  readonly chainId: number;
  /** The signing account; undefined for a read-only client. */
  readonly anchorer?: string;
  private readonly provider: JsonRpcProvider;
  private readonly contract: Contract;
  private readonly wallet?: Wallet;
  private readonly iface: Interface;
  private readonly txSender?: SerialSender;

  private constructor(p: { provider: JsonRpcProvider; address: string; chainId: number; wallet?: Wallet; abi: InterfaceAbi; opts: ClientOptions }) {
    this.provider = p.provider;
    this.address = p.address;
    this.chainId = p.chainId;
    this.wallet = p.wallet;
    this.anchorer = p.wallet?.address;
    this.iface = new Interface(p.abi);
    this.contract = new Contract(p.address, this.iface, p.wallet ?? p.provider);
    if (p.wallet) {
      this.txSender = new SerialSender(p.provider, this.contract, p.wallet, p.opts.txTimeoutMs ?? DEFAULT_TX_TIMEOUT_MS, (err, fn) => this.decode(err, fn),
        (fn, txHash, cause) => new AnchorRegistryError('reverted', [], `${fn} transaction ${txHash} reverted`, { cause }));
    }
  }

  /** Deploys a new AnchorRegistry from `privateKey` (which becomes owner and anchorer) and waits for one confirmation. */
  static async deploy(rpcUrl: string, privateKey: string, opts: ClientOptions = {}): Promise<AnchorRegistryClient> {
    const artifact = loadArtifact(CONTRACT_NAME);
    const chainId = await rpcChainId(rpcUrl);
    const provider = makeProvider(rpcUrl, chainId, opts);
    try {
      const wallet = new Wallet(privateKey, provider);
      const factory = new ContractFactory(artifact.abi as InterfaceAbi, artifact.bytecode, wallet);
      let address: string | undefined;
      for (let attempt = 1; ; attempt++) {
        try {
          const nonce = await pendingNonce(provider, wallet.address);
          const deployed = await factory.deploy({ nonce });
          const receipt = await deployed.deploymentTransaction()!.wait(1, opts.txTimeoutMs ?? DEFAULT_TX_TIMEOUT_MS);
          address = receipt?.contractAddress ?? (await deployed.getAddress());
          break;
        } catch (err) {
          if (attempt < 3 && isNonceProblem(err)) continue;
          throw err;
        }
      }
      return new AnchorRegistryClient({ provider, address: getAddress(address), chainId, wallet, abi: artifact.abi as InterfaceAbi, opts });
    } catch (err) {
      provider.destroy();
      throw err;
    }
  }

  /**
   * Connects to a deployed AnchorRegistry. Throws if the node's chain id differs from
   * `expectedChainId`, or there is no contract code at `address` (e.g. a local node restarted
   * without its state), or the code there does not answer as an AnchorRegistry. Read-only
   * without `privateKey`.
   */
  static async connect(o: { rpcUrl: string; privateKey?: string; address: string; expectedChainId?: number } & ClientOptions): Promise<AnchorRegistryClient> {
    const artifact = loadArtifact(CONTRACT_NAME);
    const address = getAddress(o.address);
    const chainId = await rpcChainId(o.rpcUrl);
    if (o.expectedChainId !== undefined && chainId !== o.expectedChainId) {
      throw new Error(`Chain id mismatch: ${o.rpcUrl} is chain ${chainId}, expected ${o.expectedChainId}`);
    }
    const provider = makeProvider(o.rpcUrl, chainId, o);
    try {
      const code = await provider.getCode(address);
      if (code === '0x') {
        throw new Error(`No contract code at ${address} on chain ${chainId} (${o.rpcUrl}): wrong address, or the chain was reset (a local node restarted without its state); deploy the AnchorRegistry again`);
      }
      const wallet = o.privateKey ? new Wallet(o.privateKey, provider) : undefined;
      const client = new AnchorRegistryClient({ provider, address, chainId, wallet, abi: artifact.abi as InterfaceAbi, opts: o });
      try {
        await client.owner();
        await client.contract.getFunction('anchoredAt').staticCall(`0x${'00'.repeat(32)}`);
      } catch (err) {
        throw new Error(`The contract at ${address} on chain ${chainId} does not answer as an AnchorRegistry: ${(err as Error).message}`, { cause: err });
      }
      return client;
    } catch (err) {
      provider.destroy();
      throw err;
    }
  }

  /**
   * Anchors `root` (32 bytes) for a tree of `leafCount` leaves built for batch `batchId`; sends,
   * waits for `confirmations` blocks (default 1; note an automining local node makes a block
   * only per transaction) and returns where it landed. Throws {@link AnchorRegistryError} with
   * the decoded revert (AlreadyAnchored, NotAnchorer, ZeroRoot, ZeroLeafCount); after an
   * AlreadyAnchored, {@link anchorTx} finds the earlier transaction.
   */
  async anchor(root: Buffer, leafCount: number, batchId: bigint, confirmations = 1, onSent?: (txHash: string) => void): Promise<AnchorReceipt> {
    const hex = rootHex(root);
    if (!Number.isSafeInteger(leafCount) || leafCount < 0) throw new RangeError(`leafCount must be a non-negative integer, got ${leafCount}`);
    if (typeof batchId !== 'bigint' || batchId < 0n || batchId > UINT64_MAX) throw new RangeError(`batchId must be a uint64 bigint, got ${String(batchId)}`);
    if (!Number.isInteger(confirmations) || confirmations < 1) throw new RangeError(`confirmations must be >= 1, got ${confirmations}`);
    const receipt = await this.transact('anchor', [hex, leafCount, batchId], confirmations, onSent);
    const block = await this.provider.getBlock(receipt.blockNumber);
    if (!block) throw new Error(`Block ${receipt.blockNumber} of anchor transaction ${receipt.hash} not found`);
    return { txHash: receipt.hash, blockNumber: receipt.blockNumber, blockTime: block.timestamp };
  }

  /** What the contract holds for `root`, or undefined if it was never anchored (on this chain). */
  async anchoredAt(root: Buffer): Promise<AnchorRecord | undefined> {
    const [blockNumber, timestamp, leafCount, batchId] = (await this.contract.getFunction('anchoredAt').staticCall(rootHex(root))) as [bigint, bigint, bigint, bigint];
    if (leafCount === 0n) return undefined;
    return { blockNumber: Number(blockNumber), blockTime: Number(timestamp), leafCount: Number(leafCount), batchId };
  }

  /**
   * The transaction that anchored `root` (from its Anchored event, in the block `anchoredAt`
   * names), or undefined if it is not anchored. For recovery: a batch whose anchor transaction
   * was sent but whose receipt was never recorded (crash) gets AlreadyAnchored when sent again.
   */
  async anchorTx(root: Buffer): Promise<AnchorReceipt | undefined> {
    const rec = await this.anchoredAt(root);
    if (!rec) return undefined;
    const logs = await this.provider.getLogs({
      address: this.address,
      fromBlock: rec.blockNumber,
      toBlock: rec.blockNumber,
      topics: [this.iface.getEvent('Anchored')!.topicHash, rootHex(root)],
    });
    const log = logs[0];
    if (!log) throw new Error(`Root ${rootHex(root)} is anchored in block ${rec.blockNumber} but its Anchored event was not found there`);
    return { txHash: log.transactionHash, blockNumber: log.blockNumber, blockTime: rec.blockTime };
  }

  /** Allows or denies `address` the right to anchor (owner only; AnchorRegistryError NotOwner otherwise). */
  async setAnchorer(address: string, allowed: boolean): Promise<void> {
    await this.transact('setAnchorer', [getAddress(address), allowed], 1);
  }

  /** Whether `address` may anchor. */
  async isAnchorer(address: string): Promise<boolean> {
    return (await this.contract.getFunction('isAnchorer').staticCall(getAddress(address))) as boolean;
  }

  /** The contract's owner (who manages anchorers). */
  async owner(): Promise<string> {
    return getAddress((await this.contract.getFunction('owner').staticCall()) as string);
  }

  /**
   * Gas an anchor transaction would use now, for a fresh random root (2,000 leaves), sent by
   * this client's account or, read-only, by the owner. Throws (NotAnchorer) if that account may not anchor.
   */
  async estimateAnchorGas(): Promise<bigint> {
    const from = this.wallet?.address ?? (await this.owner());
    try {
      return await this.contract.getFunction('anchor').estimateGas(hexlify(randomBytes(32)), 2000, BigInt(Date.now()), { from });
    } catch (err) {
      throw this.decode(err, 'anchor');
    }
  }

  /** Releases the provider (stops polling). */
  close(): void {
    this.provider.destroy();
  }

  /** Sends `fn(args)` (one send at a time, fresh pending nonce), waits for confirmations. */
  private async transact(fn: string, args: unknown[], confirmations: number, onSent?: (txHash: string) => void): Promise<TransactionReceipt> {
    if (!this.txSender) throw new Error(`This AnchorRegistry client is read-only (no private key): cannot call ${fn}`);
    return this.txSender.send(fn, args, confirmations, onSent);
  }

  /** Turns a revert into a AnchorRegistryError naming the custom error; other errors pass through. */
  private decode(err: unknown, fn: string): unknown {
    const r = decodeRevert(err, this.iface);
    if (!r) return err;
    const shown = r.args.map((a) => (typeof a === 'bigint' ? a.toString() : String(a))).join(', ');
    return new AnchorRegistryError(r.name as never, r.args, `AnchorRegistry.${fn} reverted: ${r.name}(${shown})`, { cause: err });
  }

}
