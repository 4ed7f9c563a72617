/**
 * Read-only questions to the chain itself over JSON-RPC (no server in between): its chain id, and
 * what AnchorRegistry.anchoredAt(root) records. ABI encoding through ethers' Interface.
 */
import { Interface } from 'ethers';

const ANCHOR_REGISTRY = new Interface([
  'function anchoredAt(bytes32 root) view returns (uint64 blockNumber, uint64 timestamp, uint64 leafCount, uint64 batchId)',
]);

export class ChainUnreachable extends Error {}

export interface Anchor { blockNumber: number; timestamp: number; leafCount: number; batchId: number }

let nextId = 1;

async function rpc<T>(url: string, method: string, params: unknown[]): Promise<T> {
  let r: Response;
  try {
    r = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ jsonrpc: '2.0', id: nextId++, method, params }) });
  } catch {
    throw new ChainUnreachable('The chain cannot be reached right now. Try again later.');
  }
  if (!r.ok) throw new ChainUnreachable(`The chain did not answer (HTTP ${r.status}). Try again later.`);
  const body = await r.json() as { result?: T; error?: { message?: string } };
  if (body.error) throw new Error(`The chain refused the question: ${body.error.message ?? 'unknown error'}`);
  return body.result as T;
}

export async function chainId(url: string): Promise<number> {
  return Number(BigInt(await rpc<string>(url, 'eth_chainId', [])));
}

/** What the registry at `contract` records for `root` (hex); undefined when it was never anchored. */
export async function anchoredAt(url: string, contract: string, rootHex: string): Promise<Anchor | undefined> {
  const root = rootHex.startsWith('0x') ? rootHex : `0x${rootHex}`;
  const data = ANCHOR_REGISTRY.encodeFunctionData('anchoredAt', [root]);
  const out = await rpc<string>(url, 'eth_call', [{ to: contract, data }, 'latest']);
  if (!out || out === '0x') throw new Error('There is no anchor registry at the address the server gave.');
  const [blockNumber, timestamp, leafCount, batchId] = ANCHOR_REGISTRY.decodeFunctionResult('anchoredAt', out).map((x) => Number(x as bigint));
  if (!blockNumber) return undefined;
  return { blockNumber, timestamp: timestamp!, leafCount: leafCount!, batchId: batchId! };
}
