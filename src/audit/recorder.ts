import type { AuditEvent, Resource } from '@medplum/fhirtypes';
import { newResourceId } from '../fhir/resource-id.js';
import type { Logger } from '../logger.js';
import type { Blinder, IndexRows, Store, StoreTransaction } from '../store/index.js';
import { blindQuery } from './blind-query.js';
import { AUDIT_SEQUENCE, buildAuditEvent, type AuditFacts } from './audit-event.js';

export interface AuditRecorderOptions {
  store: Store;
  /** Keyed hash for identifying query values (the store's blinder). */
  blinder: Blinder;
  /** Search-index extraction for the AuditEvents (the store's indexer). */
  index: (resource: Resource) => IndexRows;
  /** Reads and searches are written in batches, durable within this many ms (AUDIT_FLUSH_MS). */
  flushMs: number;
  observer: string;
  logger?: Logger;
}

/**
 * Writes the audit trail. An interaction that changes data records its AuditEvent in the same
 * transaction as the change (`inTransaction`); reads and searches are queued and written in
 * batches within `flushMs` (`later`); `close` writes whatever is queued. Every AuditEvent gets the
 * next number of a gapless sequence, taken in the transaction that stores it.
 */
export class AuditRecorder {
  private queue: AuditFacts[] = [];
  private timer?: NodeJS.Timeout;
  private flushing?: Promise<void>;
  private closed = false;
  /** Events written since start (for benchmarks and status). */
  written = 0;

  constructor(private readonly o: AuditRecorderOptions) {}

  /** Records the AuditEvent of a change inside the change's own transaction. */
  async inTransaction(t: StoreTransaction, facts: AuditFacts): Promise<void> {
    await this.write(t, facts);
  }

  /** Queues the AuditEvent of a read, search or refusal; durable within flushMs. */
  later(facts: AuditFacts): void {
    if (this.closed) return;
    this.queue.push(facts);
    this.timer ??= setTimeout(() => { this.timer = undefined; void this.flush().catch((err: unknown) => this.o.logger?.error({ err }, 'writing audit events failed; will retry')); }, this.o.flushMs);
  }

  /** Writes everything queued now (one transaction); resolves once it is durable. */
  async flush(): Promise<void> {
    while (this.flushing) await this.flushing.catch(() => undefined);
    if (this.queue.length === 0) return;
    const batch = this.queue;
    this.queue = [];
    this.flushing = this.o.store.transaction(async (t) => {
      for (const f of batch) await this.write(t, f);
    }).catch((err: unknown) => {
      // Not lost: back to the front of the queue for the next flush.
      this.queue = [...batch, ...this.queue];
      this.timer ??= setTimeout(() => { this.timer = undefined; void this.flush().catch(() => undefined); }, this.o.flushMs);
      throw err;
    }).finally(() => { this.flushing = undefined; });
    await this.flushing;
  }

  /** Writes what is queued and stops taking more. */
  async close(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.flush();
    this.closed = true;
  }

  private async write(t: StoreTransaction, facts: AuditFacts): Promise<void> {
    const seq = t.nextSequence(AUDIT_SEQUENCE);
    const resolved: AuditFacts = {
      ...facts,
      ...(facts.query !== undefined ? { query: blindQuery(this.o.blinder, facts.resourceType, facts.query) } : {}),
    };
    const event: AuditEvent = buildAuditEvent(resolved, { observer: this.o.observer, seq });
    const id = newResourceId();
    const resource = { ...event, id };
    await t.write({ resourceType: 'AuditEvent', id, resource, index: this.o.index(resource) });
    this.written++;
  }
}
