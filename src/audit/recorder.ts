import type { AuditEvent } from '@medplum/fhirtypes';
import { FhirError } from '../fhir/outcome.js';
import type { Logger } from '../logger.js';
import type { Blinder, Store, StoreTransaction } from '../store/index.js';
import { blindQuery } from './blind-query.js';
import { AUDIT_SEQUENCE, buildAuditEvent, type AuditFacts } from './audit-event.js';
import type { AuditWriterThread } from './writer-thread.js';

/** AuditEvents per journal batch (one sealed blob; a reader of one event decrypts its batch). */
export const EVENTS_PER_STEP = 64;
/**
 * AuditEvents per write transaction. Each commit writes its dirty pages to the WAL and empties the
 * page cache of every other connection, so fewer, larger commits cost far less (see WriterTurns).
 * With turns the server's writes never wait for more than one step; without them (the trail
 * written on the main connection) a transaction is a single step, so no write waits long.
 */
const EVENTS_PER_TRANSACTION = { withTurns: 512, alone: EVENTS_PER_STEP };
/** The writer thread writes as soon as this many facts are queued, and otherwise on the timer. */
export const WRITE_AT = 256;
/** Facts are handed to the writer thread in small batches, at least this often (ms). */
const HANDOFF_MS = 10;
const HANDOFF_BATCH = 64;
const ADMIT_TIMEOUT_MS = 10_000;

export interface AuditRecorderOptions {
  store: Store;
  /** Keyed hash for identifying query values (the store's blinder). */
  blinder: Blinder;
  /** Reads and searches are written in batches, durable within this many ms (AUDIT_FLUSH_MS). */
  flushMs: number;
  observer: string;
  logger?: Logger;
  /** Writes the batched AuditEvents on its own thread; without it (or once it stopped) they are written here. */
  thread?: AuditWriterThread;
  /** Told how many batched AuditEvents each committed transaction wrote. */
  onWritten?: (n: number) => void;
  /** How long a request waits for room in a writer thread that is behind (default 10 s). */
  admitTimeoutMs?: number;
  /** With turns at the write lock (WriterTurns): true while the server's writer waits for it, so a transaction ends early. */
  yieldWhen?: () => boolean;
}

/**
 * Writes the audit trail. An interaction that changes data records its AuditEvent in the same
 * transaction as the change (`inTransaction`); reads and searches are queued and written in
 * batches within `flushMs` (`later`); `close` writes whatever is queued. Every AuditEvent gets the
 * next number of a gapless sequence, taken in the transaction that stores it. With a writer
 * thread, batched facts are handed to it instead (within a few ms) and it does the writing.
 */
export class AuditRecorder {
  private queue: AuditFacts[] = [];
  private handoff: AuditFacts[] = [];
  private handoffTimer?: NodeJS.Timeout;
  private timer?: NodeJS.Timeout;
  private flushing?: Promise<void>;
  private closed = false;

  constructor(private readonly o: AuditRecorderOptions) {}

  /** Records the AuditEvent of a change inside the change's own transaction. */
  async inTransaction(t: StoreTransaction, facts: AuditFacts): Promise<void> {
    t.appendAuditEvents([this.event(facts, t.nextSequence(AUDIT_SEQUENCE))]);
  }

  /** Batched facts waiting here to be written. */
  get queued(): number {
    return this.queue.length;
  }

  /**
   * AuditEvents of reads, searches and refusals not yet written: queued here, waiting for hand-over,
   * or with the writer thread (what a thread that stopped had not written is lost, and not counted).
   */
  get backlog(): number {
    return this.queue.length + this.handoff.length + (this.o.thread?.running ? this.o.thread.backlog : 0);
  }

  /** Whether AuditEvents are being written: not closed, and the writer thread (when it started with one) still runs. */
  get writerUp(): boolean {
    return !this.closed && (this.o.thread?.running ?? true);
  }

  /**
   * AuditSink.admit: new requests wait while the writer thread is far behind; one that cannot be
   * recorded within admitTimeoutMs (the trail cannot be written: disk full, database locked) is
   * refused with a 503 rather than served unrecorded or left hanging.
   */
  admit(): Promise<void> | undefined {
    const room = this.o.thread?.admit(this.handoff.length);
    if (!room) return undefined;
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new FhirError(503, 'transient', 'The audit trail cannot be written fast enough right now; try again shortly')), this.o.admitTimeoutMs ?? ADMIT_TIMEOUT_MS);
      room.then(() => { clearTimeout(timer); resolve(); }, reject);
    });
  }

  /** Queues the AuditEvent of a read, search or refusal; durable within flushMs. */
  later(facts: AuditFacts): void {
    if (this.closed) return;
    if (this.o.thread?.running) {
      this.handoff.push(facts);
      if (this.handoff.length >= HANDOFF_BATCH) this.handOff();
      else this.handoffTimer ??= setTimeout(() => this.handOff(), Math.min(HANDOFF_MS, this.o.flushMs));
      return;
    }
    this.queue.push(facts);
    // Half the bound on the timer, so that writing and its fsync fit in the other half.
    this.timer ??= setTimeout(() => { this.timer = undefined; void this.flush().catch((err: unknown) => this.o.logger?.error({ err }, 'writing audit events failed; will retry')); }, this.o.flushMs / 2);
  }

  /** Writes everything queued now (in transactions of EVENTS_PER_TRANSACTION); resolves once it is durable. */
  async flush(): Promise<void> {
    this.handOff();
    if (this.o.thread?.running) await this.o.thread.flush();
    while (this.flushing) await this.flushing.catch(() => undefined);
    if (this.queue.length === 0) return;
    const batch = this.queue;
    this.queue = [];
    this.flushing = this.writeBatch(batch).catch((err: unknown) => {
      this.timer ??= setTimeout(() => { this.timer = undefined; void this.flush().catch(() => undefined); }, this.o.flushMs);
      throw err;
    }).finally(() => { this.flushing = undefined; });
    await this.flushing;
  }

  /**
   * In transactions of up to EVENTS_PER_TRANSACTION events, in steps of EVENTS_PER_STEP (one
   * journal batch each); a transaction ends early when the server's writer wants the lock. What is
   * not written goes back to the front of the queue.
   */
  private async writeBatch(batch: AuditFacts[]): Promise<void> {
    const perTransaction = this.o.yieldWhen ? EVENTS_PER_TRANSACTION.withTurns : EVENTS_PER_TRANSACTION.alone;
    let done = 0;
    while (done < batch.length) {
      try {
        const written = await this.o.store.transaction(async (t) => {
          let n = 0;
          do {
            const step = batch.slice(done + n, done + n + EVENTS_PER_STEP);
            // The step's sequence numbers in one statement, its AuditEvents in one journal batch.
            const first = t.nextSequence(AUDIT_SEQUENCE, step.length);
            t.appendAuditEvents(step.map((f, j) => this.event(f, first + j)));
            n += step.length;
          } while (done + n < batch.length && n < perTransaction && !this.o.yieldWhen?.());
          return n;
        });
        done += written;
        this.o.onWritten?.(written);
      } catch (err) {
        this.queue = [...batch.slice(done), ...this.queue];
        throw err;
      }
    }
  }

  private handOff(): void {
    if (this.handoffTimer) clearTimeout(this.handoffTimer);
    this.handoffTimer = undefined;
    if (this.handoff.length === 0) return;
    const facts = this.handoff;
    this.handoff = [];
    // A thread that stopped takes nothing more: what it had not written is lost with it (logged).
    if (this.o.thread?.running) this.o.thread.send(facts);
    else this.queue.push(...facts);
  }

  /** Writes what is queued and stops taking more. */
  async close(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.handOff();
    await this.o.thread?.close();
    await this.flush();
    this.closed = true;
  }

  /** The AuditEvent with number `seq` of the audit sequence (also its id). */
  private event(facts: AuditFacts, seq: number): AuditEvent {
    const resolved: AuditFacts = {
      ...facts,
      ...(facts.query !== undefined ? { query: blindQuery(this.o.blinder, facts.resourceType, facts.query) } : {}),
    };
    return { ...buildAuditEvent(resolved, { observer: this.o.observer, seq }), id: String(seq), meta: { versionId: '1', lastUpdated: new Date().toISOString() } };
  }
}
