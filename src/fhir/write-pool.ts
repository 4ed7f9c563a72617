import type { Worker } from 'node:worker_threads';
import type { OperationOutcomeIssue, Resource } from '@medplum/fhirtypes';
import type { Logger } from 'pino';
import { createIndexer, Blinder, type IndexRows, type Indexer } from '../store/index.js';
import { validationIssues } from './validate.js';
import { startWorker } from '../workers.js';

export interface PrepareRequest { id: number; resource: unknown; validateOnly?: boolean }
export type PrepareReply =
  | { id: number; issues: OperationOutcomeIssue[]; index?: IndexRows; error?: undefined }
  | { id: number; error: string; issues?: undefined; index?: undefined };

export interface Prepared {
  /** Validation errors; empty when the resource is valid. */
  issues: OperationOutcomeIssue[];
  /** Index rows (only when valid). */
  index?: IndexRows;
}

/** Validates a resource and extracts its search-index rows. */
export interface WritePreparer {
  prepare(resource: Resource): Promise<Prepared>;
  /** The same, synchronously on this thread (inside a write transaction nothing may wait). */
  prepareNow(resource: Resource): Prepared;
  /** Validation only (the index comes later, from the final body). */
  validate(resource: Resource): Promise<OperationOutcomeIssue[]>;
  /** Index extraction only, on this thread, for a resource already validated. */
  indexNow(resource: Resource): IndexRows;
  close(): Promise<void>;
}

/** In-thread preparation (no workers). */
export class InlinePreparer implements WritePreparer {
  private readonly indexer: Indexer;
  constructor(indexKey: Buffer) {
    this.indexer = createIndexer(new Blinder(indexKey));
  }
  prepareNow(resource: Resource): Prepared {
    const issues = validationIssues(resource);
    return issues.length > 0 ? { issues } : { issues, index: this.indexer.extract(resource) };
  }
  async prepare(resource: Resource): Promise<Prepared> {
    return this.prepareNow(resource);
  }
  async validate(resource: Resource): Promise<OperationOutcomeIssue[]> {
    return validationIssues(resource);
  }
  indexNow(resource: Resource): IndexRows {
    return this.indexer.extract(resource);
  }
  async close(): Promise<void> {}
}

interface Slot { worker: Worker; ready: boolean; inFlight: number }

const MAX_RESTARTS = 10;

/**
 * A pool of worker threads that validate and index resources in parallel with the event loop
 * (on a 2-core machine the main thread does HTTP, crypto and SQLite; a worker does the rest).
 * Until a worker is ready, and if one dies, requests fall back to the inline path.
 */
export class WorkerPreparer implements WritePreparer {
  private readonly slots: Slot[] = [];
  private readonly pending = new Map<number, { resolve: (p: Prepared) => void; reject: (e: Error) => void; slot: Slot }>();
  private nextId = 1;
  private closed = false;
  private restarts = 0;
  private readonly inline: InlinePreparer;

  constructor(private readonly indexKey: Buffer, size: number, private readonly logger: Logger) {
    this.inline = new InlinePreparer(indexKey);
    for (let i = 0; i < size; i++) this.slots.push(this.spawn());
  }

  private spawn(): Slot {
    const worker = startWorker(new URL('./write-worker.js', import.meta.url), { indexKey: this.indexKey });
    const slot: Slot = { worker, ready: false, inFlight: 0 };
    worker.unref();
    worker.on('message', (msg: PrepareReply | { ready: true }) => {
      if ('ready' in msg) {
        slot.ready = true;
        return;
      }
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      slot.inFlight--;
      if (msg.error !== undefined) p.reject(new Error(`write worker: ${msg.error}`));
      else p.resolve({ issues: msg.issues, index: msg.index });
    });
    worker.on('error', (err) => this.logger.error({ err }, 'write worker failed'));
    worker.on('exit', (code) => {
      for (const [id, p] of this.pending) {
        if (p.slot === slot) {
          this.pending.delete(id);
          p.reject(new Error(`write worker exited with code ${code}`));
        }
      }
      const i = this.slots.indexOf(slot);
      if (this.closed || i < 0) return;
      // A worker that dies before it was ever ready will not do better next time: stay inline.
      if (!slot.ready || ++this.restarts > MAX_RESTARTS) {
        this.logger.error({ code }, 'write worker exited; validating on the main thread from now on');
        this.slots.splice(i, 1);
        return;
      }
      this.logger.warn({ code }, 'write worker exited; starting another');
      this.slots[i] = this.spawn();
    });
    return slot;
  }

  prepareNow(resource: Resource): Prepared {
    return this.inline.prepareNow(resource);
  }

  indexNow(resource: Resource): IndexRows {
    return this.inline.indexNow(resource);
  }

  async validate(resource: Resource): Promise<OperationOutcomeIssue[]> {
    return (await this.send(resource, true)).issues;
  }

  prepare(resource: Resource): Promise<Prepared> {
    return this.send(resource, false);
  }

  private send(resource: Resource, validateOnly: boolean): Promise<Prepared> {
    let slot: Slot | undefined;
    for (const s of this.slots) if (s.ready && (!slot || s.inFlight < slot.inFlight)) slot = s;
    if (!slot || this.closed) return validateOnly ? this.inline.validate(resource).then((issues) => ({ issues })) : this.inline.prepare(resource);
    const id = this.nextId++;
    const chosen = slot;
    chosen.inFlight++;
    return new Promise<Prepared>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, slot: chosen });
      chosen.worker.postMessage({ id, resource, validateOnly } satisfies PrepareRequest);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}
