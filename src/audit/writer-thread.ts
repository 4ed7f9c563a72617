import type { Logger } from 'pino';
import type { Worker } from 'node:worker_threads';
import { WriterTurns } from '../store/index.js';
import { startWorker } from '../workers.js';
import type { AuditFacts } from './audit-event.js';

/** What the writer thread needs to open its own connection and write AuditEvents as the server would. */
export interface AuditWriterData {
  file: string;
  kek: Buffer;
  indexKey: Buffer;
  observer: string;
  flushMs: number;
  /** WriterTurns.buffer shared with the server's store (opened with `turns: { as: 'server' }`). */
  turns?: SharedArrayBuffer;
}

/** Facts cross as one JSON string: cloning a string is a copy, cloning many small objects is not. */
export type ToAuditWriter = { t: 'facts'; json: string } | { t: 'flush'; id: number } | { t: 'close'; id: number };
export type FromAuditWriter = { t: 'ready' } | { t: 'done'; id: number; error?: string } | { t: 'written'; n: number };

const READY_TIMEOUT_MS = 20_000;
/** Facts handed over but not yet written beyond which new requests wait (well above WRITE_AT, and written in a fraction of AUDIT_FLUSH_MS). */
const MAX_BACKLOG = 2048;

/**
 * The audit trail's writer thread: it owns a second SQLite connection and turns the facts of
 * reads, searches and refusals into stored AuditEvents (building, blinding, indexing, hashing,
 * encrypting, writing), so none of that runs on the event loop. SQLite serializes it with the
 * server's own writes; it writes in small transactions so they never wait long.
 */
export class AuditWriterThread {
  private readonly waiting = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private alive = true;
  private closing = false;
  private sent = 0;
  private written = 0;
  private room?: { promise: Promise<void>; resolve: () => void };

  private constructor(private readonly worker: Worker, private readonly logger?: Logger, turns?: WriterTurns) {
    worker.on('message', (m: FromAuditWriter) => {
      if (m.t === 'written') {
        this.written += m.n;
        if (this.room && this.backlog < MAX_BACKLOG) this.openRoom();
        return;
      }
      if (m.t !== 'done') return;
      const w = this.waiting.get(m.id);
      this.waiting.delete(m.id);
      if (m.error) w?.reject(new Error(m.error));
      else w?.resolve();
    });
    worker.on('error', (err) => this.logger?.error({ err }, 'audit writer thread failed'));
    worker.on('exit', (code) => {
      if (!this.closing) this.logger?.error({ code }, 'audit writer thread stopped; AuditEvents it had not yet written are lost, later ones are written on the main thread');
      this.alive = false;
      // A thread that stopped inside its transaction must not keep the server's writes waiting.
      turns?.otherRelease();
      this.openRoom();
      for (const w of this.waiting.values()) w.reject(new Error(`audit writer thread exited (${code})`));
      this.waiting.clear();
    });
  }

  /** Starts the thread and waits until its connection is open; undefined if it cannot start. */
  static async start(data: AuditWriterData, logger?: Logger): Promise<AuditWriterThread | undefined> {
    const worker = startWorker(new URL('./writer-worker.js', import.meta.url), data);
    const ready = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), READY_TIMEOUT_MS);
      worker.once('message', (m: FromAuditWriter) => { clearTimeout(timer); resolve(m.t === 'ready'); });
      worker.once('error', (err) => { clearTimeout(timer); logger?.error({ err }, 'audit writer thread did not start'); resolve(false); });
    });
    if (!ready) {
      await worker.terminate();
      return undefined;
    }
    return new AuditWriterThread(worker, logger, data.turns ? new WriterTurns(data.turns) : undefined);
  }

  get running(): boolean {
    return this.alive;
  }

  send(facts: AuditFacts[]): void {
    this.sent += facts.length;
    this.worker.postMessage({ t: 'facts', json: JSON.stringify(facts.map(slim)) } satisfies ToAuditWriter);
  }

  /** Facts handed over and not yet written. */
  get backlog(): number {
    return this.sent - this.written;
  }

  /** See AuditSink.admit: waits while the thread is more than MAX_BACKLOG behind. */
  admit(pending: number): Promise<void> | undefined {
    if (!this.alive || this.backlog + pending <= MAX_BACKLOG) return undefined;
    if (!this.room) {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => { resolve = r; });
      this.room = { promise, resolve };
    }
    return this.room.promise;
  }

  private openRoom(): void {
    const room = this.room;
    this.room = undefined;
    room?.resolve();
  }

  /** Resolves once everything sent so far is durable. */
  flush(): Promise<void> {
    return this.request('flush');
  }

  /** Writes everything sent so far, then stops the thread. */
  async close(): Promise<void> {
    this.closing = true;
    if (this.alive) await this.request('close').catch((err: unknown) => this.logger?.error({ err }, 'audit writer thread did not close cleanly'));
    await this.worker.terminate();
  }

  private request(t: 'flush' | 'close'): Promise<void> {
    if (!this.alive) return Promise.reject(new Error('audit writer thread is not running'));
    const id = this.nextId++;
    return new Promise<void>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.worker.postMessage({ t, id } satisfies ToAuditWriter);
    });
  }
}

/** The facts sent as JSON, as they were (`recorded` is a Date again). */
export function factsFromJson(json: string): AuditFacts[] {
  const facts = JSON.parse(json) as Array<AuditFacts & { recorded: string | Date }>;
  for (const f of facts) f.recorded = new Date(f.recorded);
  return facts;
}

/** Only what the AuditEvent is built from crosses the thread boundary (not the token's scopes). */
function slim(f: AuditFacts): AuditFacts {
  const p = f.principal;
  const principal = p.kind === 'token'
    ? { kind: 'token' as const, clientId: p.clientId, subject: p.subject, tokenId: '', scope: '', scopes: [], ...(p.fhirUser !== undefined ? { fhirUser: p.fhirUser } : {}) }
    : p;
  return { ...f, principal };
}
