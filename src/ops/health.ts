import type { Logger } from 'pino';
import type { ChainProbe } from './chain-probe.js';

export type PartState = 'ok' | 'off' | 'down';

export interface Readiness {
  status: 'ok' | 'unavailable';
  checks: { store: PartState; chain: PartState; audit: PartState };
}

/** What readiness depends on. */
export interface ReadinessParts {
  /** Throws unless the store answers a trivial query. */
  pingStore(): void;
  /** The ledger's chain; undefined with LEDGER=off. */
  chain?: ChainProbe;
  /** Whether AuditEvents are being written; undefined with AUDIT=off. */
  auditUp?: () => boolean;
}

/**
 * Ready = the store answers, the chain is reachable (or the ledger is off) and the audit writer
 * runs (or the trail is off). What failed is logged when a part changes state, with its reason;
 * the answer names only the part (an RPC error can carry the node's URL and its credentials).
 */
export class ReadinessCheck {
  private readonly last: Partial<Record<keyof Readiness['checks'], PartState>> = {};

  constructor(private readonly parts: ReadinessParts, private readonly logger: Logger) {}

  async check(): Promise<Readiness> {
    const reasons: Partial<Record<keyof Readiness['checks'], string>> = {};
    let store: PartState = 'ok';
    try {
      this.parts.pingStore();
    } catch (err) {
      store = 'down';
      reasons.store = (err as Error).message;
    }
    let chain: PartState = 'off';
    if (this.parts.chain) {
      const probe = await this.parts.chain.check();
      chain = probe.ok ? 'ok' : 'down';
      if (!probe.ok) reasons.chain = probe.error;
    }
    const audit: PartState = !this.parts.auditUp ? 'off' : this.parts.auditUp() ? 'ok' : 'down';
    if (audit === 'down') reasons.audit = 'the audit writer thread stopped';
    const checks = { store, chain, audit };
    this.logChanges(checks, reasons);
    return { status: Object.values(checks).includes('down') ? 'unavailable' : 'ok', checks };
  }

  private logChanges(checks: Readiness['checks'], reasons: Partial<Record<keyof Readiness['checks'], string>>): void {
    for (const part of Object.keys(checks) as Array<keyof Readiness['checks']>) {
      const before = this.last[part];
      const now = checks[part];
      this.last[part] = now;
      if (before === undefined ? now !== 'down' : before === now) continue;
      if (now === 'down') this.logger.warn({ part, reason: reasons[part] }, 'not ready');
      else this.logger.info({ part }, 'ready again');
    }
  }
}
