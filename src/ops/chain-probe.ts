export type ProbeResult = { ok: true; block: number } | { ok: false; error: string };

const DEFAULT_TIMEOUT_MS = 2000;

/**
 * Whether the chain's JSON-RPC endpoint answers: one `eth_blockNumber` per check, bounded in
 * time. Checks made while one is in flight share it, so frequent probes and scrapes never pile
 * requests onto the node.
 */
export class ChainProbe {
  private inflight?: Promise<ProbeResult>;

  private readonly url: string;
  private readonly headers: Record<string, string> = { 'content-type': 'application/json' };

  constructor(rpcUrl: string, private readonly timeoutMs = DEFAULT_TIMEOUT_MS) {
    // fetch refuses URLs with credentials (https://user:pass@node/...): send them as Basic auth, as ethers does.
    const u = new URL(rpcUrl);
    if (u.username || u.password) {
      this.headers.authorization = `Basic ${Buffer.from(`${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}`).toString('base64')}`;
      u.username = '';
      u.password = '';
    }
    this.url = u.href;
  }

  check(): Promise<ProbeResult> {
    this.inflight ??= this.probe().finally(() => { this.inflight = undefined; });
    return this.inflight;
  }

  private async probe(): Promise<ProbeResult> {
    try {
      const res = await fetch(this.url, {
        method: 'POST',
        headers: this.headers,
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'eth_blockNumber', params: [] }),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
      if (!res.ok) return { ok: false, error: `HTTP ${res.status}` };
      const body = (await res.json()) as { result?: unknown; error?: { message?: unknown } };
      if (typeof body.result !== 'string') return { ok: false, error: `no block number (${String(body.error?.message ?? 'no result').slice(0, 200)})` };
      return { ok: true, block: Number.parseInt(body.result, 16) };
    } catch (err) {
      return { ok: false, error: (err as Error).message.slice(0, 200) };
    }
  }
}
