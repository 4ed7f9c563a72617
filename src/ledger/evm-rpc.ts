import { isError, JsonRpcProvider, Network, type Contract, type ContractTransactionResponse, type Interface, type TransactionReceipt, type Wallet } from 'ethers';

/** Shared JSON-RPC plumbing of the contract clients (AnchorRegistry, ConsentRegistry). */

/** The chain id an endpoint reports (one plain request, 10 s timeout, clear errors). */
export async function rpcChainId(rpcUrl: string): Promise<number> {
  let res: Response;
  try {
    res = await fetch(rpcUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'eth_chainId', params: [] }),
      signal: AbortSignal.timeout(10_000),
    });
  } catch (err) {
    throw new Error(`Cannot reach the EVM JSON-RPC endpoint ${rpcUrl}: ${(err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message}`, { cause: err });
  }
  if (!res.ok) throw new Error(`EVM JSON-RPC endpoint ${rpcUrl} answered HTTP ${res.status} to eth_chainId`);
  const body = (await res.json()) as { result?: string; error?: { message: string } };
  if (typeof body.result !== 'string') throw new Error(`EVM JSON-RPC endpoint ${rpcUrl} gave no chain id${body.error ? `: ${body.error.message}` : ''}`);
  return Number(BigInt(body.result));
}

/**
 * A provider for one known chain. Static network: no eth_chainId before every call and no
 * background "detect network" loop; batching off: one HTTP request per call is faster on a
 * local node; cache off: ethers otherwise answers identical requests made within 250 ms from
 * a cache, so a view could be stale and a transaction retried right after a revert would get
 * the old estimateGas rejection back without asking the node.
 */
export function makeProvider(rpcUrl: string, chainId: number, o: { pollingIntervalMs?: number }): JsonRpcProvider {
  return new JsonRpcProvider(rpcUrl, Network.from(chainId), { staticNetwork: true, batchMaxCount: 1, cacheTimeout: -1, pollingInterval: o.pollingIntervalMs ?? 1000 });
}

/** The account's pending nonce, straight from the node. */
export async function pendingNonce(provider: JsonRpcProvider, address: string): Promise<number> {
  return Number(BigInt((await provider.send('eth_getTransactionCount', [address, 'pending'])) as string));
}

export function isNonceProblem(err: unknown): boolean {
  if (isError(err, 'NONCE_EXPIRED') || isError(err, 'REPLACEMENT_UNDERPRICED') || isError(err, 'TRANSACTION_REPLACED')) return true;
  return /nonce (?:too (?:low|high)|has already been used)|invalid nonce|already known/i.test(String((err as Error)?.message ?? ''));
}

/** The custom error a revert names (decoded from the contract's ABI), if it is one of ours. */
export function decodeRevert(err: unknown, iface: Interface): { name: string; args: unknown[] } | undefined {
  if (!isError(err, 'CALL_EXCEPTION')) return undefined;
  if (err.revert?.name) return { name: err.revert.name, args: [...err.revert.args] };
  if (!err.data) return undefined;
  try {
    const parsed = iface.parseError(err.data);
    return parsed ? { name: parsed.name, args: [...parsed.args] } : undefined;
  } catch {
    return undefined; // not one of ours
  }
}

/**
 * Sends a contract's transactions one at a time, each with the account's pending nonce read
 * from the node just before sending (retried on nonce errors), so a node restarted without its
 * state or a transaction that failed does not leave a stale nonce behind. `toError` turns a
 * revert into the client's own error type (or returns the error unchanged).
 */
export class SerialSender {
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly provider: JsonRpcProvider,
    private readonly contract: Contract,
    private readonly wallet: Wallet,
    private readonly timeoutMs: number,
    private readonly toError: (err: unknown, fn: string) => unknown,
    private readonly reverted: (fn: string, txHash: string, cause: unknown) => Error,
  ) {}

  async send(fn: string, args: unknown[], confirmations: number, onSent?: (txHash: string) => void): Promise<TransactionReceipt> {
    const send = async (): Promise<ContractTransactionResponse> => {
      for (let attempt = 1; ; attempt++) {
        try {
          const nonce = await pendingNonce(this.provider, this.wallet.address);
          // ethers estimates gas first, so a revert surfaces here, decoded, before anything is sent.
          return (await this.contract.getFunction(fn).send(...args, { nonce })) as ContractTransactionResponse;
        } catch (err) {
          if (attempt < 3 && isNonceProblem(err)) continue;
          throw this.toError(err, fn);
        }
      }
    };
    const queued = this.queue.then(send, send);
    this.queue = queued.catch(() => undefined);
    const tx = await queued;
    onSent?.(tx.hash);
    let receipt: TransactionReceipt | null;
    try {
      receipt = await tx.wait(confirmations, this.timeoutMs);
    } catch (err) {
      if (!isError(err, 'CALL_EXCEPTION')) throw err;
      // Mined but reverted (e.g. another sender got there first): replay it as a call to learn why.
      try {
        await this.contract.getFunction(fn).staticCall(...args, { from: this.wallet.address });
      } catch (callErr) {
        const decoded = this.toError(callErr, fn);
        if (decoded !== callErr) throw decoded;
      }
      throw this.reverted(fn, tx.hash, err);
    }
    if (!receipt) throw new Error(`${fn} transaction ${tx.hash} has no receipt`);
    return receipt;
  }
}
