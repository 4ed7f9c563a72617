import { createHmac } from 'node:crypto';
import {
  Contract,
  ContractFactory,
  getAddress,
  Interface,
  JsonRpcProvider,
  Wallet,
  type InterfaceAbi,
} from 'ethers';
import { loadArtifact } from '../ledger/contract-artifacts.js';
import { decodeRevert, isNonceProblem, makeProvider, pendingNonce, rpcChainId, SerialSender } from '../ledger/evm-rpc.js';

// The RPC/nonce helpers below mirror src/ledger/anchor-registry.ts (not exported there).

const CONTRACT_NAME = 'ConsentRegistry';
const DEFAULT_TX_TIMEOUT_MS = 300_000;
const BYTES32 = /^0x[0-9a-fA-F]{64}$/;

export interface ConsentClientOptions {
  /** How long transactions wait for a confirmation (default 300 000 ms; 0 = forever). */
  txTimeoutMs?: number;
  /** Block polling interval while waiting (default 1000 ms). */
  pollingIntervalMs?: number;
}

/** Where a transaction landed. */
export interface ConsentTxReceipt {
  txHash: string;
  blockNumber: number;
  gasUsed: bigint;
}

export type ConsentTypedDataKind = 'BindKey' | 'Grant' | 'Revoke';

/** JSON-safe EIP-712 payload, as `eth_signTypedData_v4` and ethers' `signTypedData` take it. */
export interface ConsentTypedData {
  domain: { name: 'Custos Consent'; version: '1'; chainId: string; verifyingContract: string };
  types: Record<string, Array<{ name: string; type: string }>>;
  primaryType: ConsentTypedDataKind;
  message: Record<string, string>;
}

/** Message fields per kind; numbers may be given as bigint, number or decimal string. */
export type ConsentTypedDataMessage =
  | { pid: string; key: string; nonce: bigint | number | string; deadline: bigint | number | string }
  | { pid: string; consentHash: string; nonce: bigint | number | string; deadline: bigint | number | string };

export const CONSENT_EIP712_TYPES = {
  EIP712Domain: [
    { name: 'name', type: 'string' },
    { name: 'version', type: 'string' },
    { name: 'chainId', type: 'uint256' },
    { name: 'verifyingContract', type: 'address' },
  ],
  BindKey: [
    { name: 'pid', type: 'bytes32' },
    { name: 'key', type: 'address' },
    { name: 'nonce', type: 'uint256' },
    { name: 'deadline', type: 'uint256' },
  ],
  Grant: [
    { name: 'pid', type: 'bytes32' },
    { name: 'consentHash', type: 'bytes32' },
    { name: 'nonce', type: 'uint256' },
    { name: 'deadline', type: 'uint256' },
  ],
  Revoke: [
    { name: 'pid', type: 'bytes32' },
    { name: 'consentHash', type: 'bytes32' },
    { name: 'nonce', type: 'uint256' },
    { name: 'deadline', type: 'uint256' },
  ],
} as const;

export type ConsentRegistryRevert =
  | 'NotOwner'
  | 'ZeroAddress'
  | 'BadSignature'
  | 'Expired'
  | 'BadNonce'
  | 'NoKey'
  | 'KeyAlreadyBound'
  | 'NotKeyHolder'
  | 'AlreadyActive'
  | 'NotActive'
  | 'NoRecovery'
  | 'RecoveryNotReady';

/** A transaction or call the contract rejected; `reason` is the custom error's name, `args` its decoded arguments. */
export class ConsentRegistryError extends Error {
  override readonly name = 'ConsentRegistryError';
  constructor(
    readonly reason: ConsentRegistryRevert | 'reverted',
    readonly args: readonly unknown[],
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Pseudonymous patient id: HMAC-SHA-256(secret, patientRef) as 0x-hex bytes32 (e.g. patientRef = "Patient/123"). */
export function pseudonymousId(secret: Buffer, patientRef: string): string {
  if (!Buffer.isBuffer(secret) || secret.length < 16) throw new TypeError('secret must be a Buffer of at least 16 bytes');
  if (typeof patientRef !== 'string' || patientRef.length === 0) throw new TypeError('patientRef must be a non-empty string');
  return `0x${createHmac('sha256', secret).update(patientRef, 'utf8').digest('hex')}`;
}

function bytes32(v: string, what: string): string {
  if (typeof v !== 'string' || !BYTES32.test(v)) throw new TypeError(`${what} must be 0x-prefixed 32-byte hex, got ${String(v)}`);
  return v.toLowerCase();
}

function uint(v: bigint | number | string, what: string): bigint {
  let n: bigint;
  try {
    n = BigInt(v);
  } catch {
    throw new TypeError(`${what} must be an unsigned integer, got ${String(v)}`);
  }
  if (n < 0n || n >= 1n << 256n) throw new RangeError(`${what} out of uint256 range: ${String(v)}`);
  return n;
}

/**
 * Client for `contracts/ConsentRegistry.sol` (ethers v6). Transactions are sent one at a time
 * with the pending nonce read from the node; reverts are thrown as {@link ConsentRegistryError}.
 */
export class ConsentRegistryClient {
  readonly address: string;
  readonly chainId: number;
  /** The relaying account; undefined for a read-only client. */
  readonly sender?: string;
  private readonly provider: JsonRpcProvider;
  private readonly contract: Contract;
  private readonly iface: Interface;
  private readonly txSender?: SerialSender;

  private constructor(p: { provider: JsonRpcProvider; address: string; chainId: number; wallet?: Wallet; abi: InterfaceAbi; opts: ConsentClientOptions }) {
    this.provider = p.provider;
    this.address = p.address;
    this.chainId = p.chainId;
    this.sender = p.wallet?.address;
    this.iface = new Interface(p.abi);
    this.contract = new Contract(p.address, this.iface, p.wallet ?? p.provider);
    if (p.wallet) {
      this.txSender = new SerialSender(p.provider, this.contract, p.wallet, p.opts.txTimeoutMs ?? DEFAULT_TX_TIMEOUT_MS, (err, fn) => this.decode(err, fn),
        (fn, txHash, cause) => new ConsentRegistryError('reverted', [], `${fn} transaction ${txHash} reverted`, { cause }));
    }
  }

  /** Deploys a ConsentRegistry from `privateKey` (which becomes owner/operator) and waits for one confirmation. */
  static async deploy(rpcUrl: string, privateKey: string, recoveryDelaySeconds: number, opts: ConsentClientOptions = {}): Promise<ConsentRegistryClient> {
    if (!Number.isSafeInteger(recoveryDelaySeconds) || recoveryDelaySeconds < 0) throw new RangeError(`recoveryDelaySeconds must be a non-negative integer, got ${recoveryDelaySeconds}`);
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
          const deployed = await factory.deploy(recoveryDelaySeconds, { nonce });
          const receipt = await deployed.deploymentTransaction()!.wait(1, opts.txTimeoutMs ?? DEFAULT_TX_TIMEOUT_MS);
          address = receipt?.contractAddress ?? (await deployed.getAddress());
          break;
        } catch (err) {
          if (attempt < 3 && isNonceProblem(err)) continue;
          throw err;
        }
      }
      return new ConsentRegistryClient({ provider, address: getAddress(address), chainId, wallet, abi: artifact.abi as InterfaceAbi, opts });
    } catch (err) {
      provider.destroy();
      throw err;
    }
  }

  /** Connects to a deployed ConsentRegistry (checks chain id, code, and that it answers as one). Read-only without `privateKey`. */
  static async connect(o: { rpcUrl: string; address: string; privateKey?: string; expectedChainId?: number } & ConsentClientOptions): Promise<ConsentRegistryClient> {
    const artifact = loadArtifact(CONTRACT_NAME);
    const address = getAddress(o.address);
    const chainId = await rpcChainId(o.rpcUrl);
    if (o.expectedChainId !== undefined && chainId !== o.expectedChainId) {
      throw new Error(`Chain id mismatch: ${o.rpcUrl} is chain ${chainId}, expected ${o.expectedChainId}`);
    }
    const provider = makeProvider(o.rpcUrl, chainId, o);
    try {
      const code = await provider.getCode(address);
      if (code === '0x') throw new Error(`No contract code at ${address} on chain ${chainId} (${o.rpcUrl}): wrong address, or the chain was reset; deploy the ConsentRegistry again`);
      const wallet = o.privateKey ? new Wallet(o.privateKey, provider) : undefined;
      const client = new ConsentRegistryClient({ provider, address, chainId, wallet, abi: artifact.abi as InterfaceAbi, opts: o });
      try {
        await client.domainSeparator();
        await client.nonceOf(`0x${'00'.repeat(32)}`);
      } catch (err) {
        throw new Error(`The contract at ${address} on chain ${chainId} does not answer as a ConsentRegistry: ${(err as Error).message}`, { cause: err });
      }
      return client;
    } catch (err) {
      provider.destroy();
      throw err;
    }
  }

  /** The exact EIP-712 payload a wallet signs (JSON-safe: numbers as decimal strings, addresses checksummed). */
  typedData(kind: ConsentTypedDataKind, message: ConsentTypedDataMessage): ConsentTypedData {
    const m = message as Record<string, unknown>;
    const base = { pid: bytes32(m.pid as string, 'pid') };
    let msg: Record<string, string>;
    if (kind === 'BindKey') {
      msg = { ...base, key: getAddress(m.key as string), nonce: uint(m.nonce as bigint, 'nonce').toString(), deadline: uint(m.deadline as bigint, 'deadline').toString() };
    } else if (kind === 'Grant' || kind === 'Revoke') {
      msg = { ...base, consentHash: bytes32(m.consentHash as string, 'consentHash'), nonce: uint(m.nonce as bigint, 'nonce').toString(), deadline: uint(m.deadline as bigint, 'deadline').toString() };
    } else {
      throw new TypeError(`Unknown typed data kind ${String(kind)}`);
    }
    return {
      domain: { name: 'Custos Consent', version: '1', chainId: String(this.chainId), verifyingContract: this.address },
      types: { EIP712Domain: [...CONSENT_EIP712_TYPES.EIP712Domain], [kind]: [...CONSENT_EIP712_TYPES[kind]] },
      primaryType: kind,
      message: msg,
    };
  }

  /** Binds `pid` to `key` with a BindKey signature (by `key` the first time, by the current key after). */
  async bindKey(pid: string, key: string, deadline: bigint | number, sig: string): Promise<ConsentTxReceipt> {
    return this.transact('bindKey', [bytes32(pid, 'pid'), getAddress(key), uint(deadline, 'deadline'), sig]);
  }

  /** Relays a Grant signature. */
  async grant(pid: string, consentHash: string, nonce: bigint | number, deadline: bigint | number, sig: string): Promise<ConsentTxReceipt> {
    return this.transact('grant', [bytes32(pid, 'pid'), bytes32(consentHash, 'consentHash'), uint(nonce, 'nonce'), uint(deadline, 'deadline'), sig]);
  }

  /** Relays a Revoke signature. */
  async revoke(pid: string, consentHash: string, nonce: bigint | number, deadline: bigint | number, sig: string): Promise<ConsentTxReceipt> {
    return this.transact('revoke', [bytes32(pid, 'pid'), bytes32(consentHash, 'consentHash'), uint(nonce, 'nonce'), uint(deadline, 'deadline'), sig]);
  }

  /** Sent by the patient's own key (a client connected with it): grant without signature. */
  async grantDirect(pid: string, consentHash: string): Promise<ConsentTxReceipt> {
    return this.transact('grantDirect', [bytes32(pid, 'pid'), bytes32(consentHash, 'consentHash')]);
  }

  /** Sent by the patient's own key: revoke without signature. */
  async revokeDirect(pid: string, consentHash: string): Promise<ConsentTxReceipt> {
    return this.transact('revokeDirect', [bytes32(pid, 'pid'), bytes32(consentHash, 'consentHash')]);
  }

  /** Operator (owner) proposes binding `pid` to `newKey` after the recovery delay. */
  async proposeRecovery(pid: string, newKey: string): Promise<ConsentTxReceipt> {
    return this.transact('proposeRecovery', [bytes32(pid, 'pid'), getAddress(newKey)]);
  }

  /** Executes a pending recovery whose delay has passed (anyone). */
  async executeRecovery(pid: string): Promise<ConsentTxReceipt> {
    return this.transact('executeRecovery', [bytes32(pid, 'pid')]);
  }

  /** The current key (a client connected with it) cancels the pending recovery. */
  async cancelRecovery(pid: string): Promise<ConsentTxReceipt> {
    return this.transact('cancelRecovery', [bytes32(pid, 'pid')]);
  }

  async isActive(pid: string, consentHash: string): Promise<boolean> {
    return (await this.contract.getFunction('isActive').staticCall(bytes32(pid, 'pid'), bytes32(consentHash, 'consentHash'))) as boolean;
  }

  /** The bound key, or undefined when none. */
  async keyOf(pid: string): Promise<string | undefined> {
    const k = getAddress((await this.contract.getFunction('keyOf').staticCall(bytes32(pid, 'pid'))) as string);
    return BigInt(k) === 0n ? undefined : k;
  }

  async nonceOf(pid: string): Promise<bigint> {
    return (await this.contract.getFunction('nonceOf').staticCall(bytes32(pid, 'pid'))) as bigint;
  }

  async pendingRecovery(pid: string): Promise<{ newKey: string; executableAt: number } | undefined> {
    const [newKey, at] = (await this.contract.getFunction('pendingRecovery').staticCall(bytes32(pid, 'pid'))) as [string, bigint];
    return BigInt(newKey) === 0n ? undefined : { newKey: getAddress(newKey), executableAt: Number(at) };
  }

  async domainSeparator(): Promise<string> {
    return (await this.contract.getFunction('domainSeparator').staticCall()) as string;
  }

  async owner(): Promise<string> {
    return getAddress((await this.contract.getFunction('owner').staticCall()) as string);
  }

  /** The contract's Interface (for decoding logs). */
  get interface(): Interface {
    return this.iface;
  }

  /** Releases the provider. */
  close(): void {
    this.provider.destroy();
  }

  private async transact(fn: string, args: unknown[]): Promise<ConsentTxReceipt> {
    if (!this.txSender) throw new Error(`This ConsentRegistry client is read-only (no private key): cannot call ${fn}`);
    const receipt = await this.txSender.send(fn, args, 1);
    return { txHash: receipt.hash, blockNumber: receipt.blockNumber, gasUsed: receipt.gasUsed };
  }

  /** Turns a revert into a ConsentRegistryError naming the custom error; other errors pass through. */
  private decode(err: unknown, fn: string): unknown {
    const r = decodeRevert(err, this.iface);
    if (!r) return err;
    const shown = r.args.map((a) => (typeof a === 'bigint' ? a.toString() : String(a))).join(', ');
    return new ConsentRegistryError(r.name as never, r.args, `ConsentRegistry.${fn} reverted: ${r.name}(${shown})`, { cause: err });
  }

}
