import type { OperationOutcomeIssue, Resource } from '@medplum/fhirtypes';
import type { Logger } from 'pino';
import { createIndexer, Blinder, type IndexRows, type Indexer } from '../store/index.js';
import { WorkerPool } from '../workers.js';
import { fromWorkerFailure } from './outcome.js';
import { validationIssues } from './validate.js';

export interface PrepareRequest { resource: unknown; validateOnly?: boolean }

export interface Prepared {
  /** Validation errors; empty when the resource is valid. */
  issues: OperationOutcomeIssue[];
  /** Index rows (only when valid and asked for). */
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

/** In-thread preparation (no workers); also what a worker runs. */
export class InlinePreparer implements WritePreparer {
  private readonly indexer: Indexer;
  constructor(indexKey: Buffer) {
    this.indexer = createIndexer(new Blinder(indexKey));
  }
  handle(req: PrepareRequest): Prepared {
    const resource = req.resource as Resource;
    const issues = validationIssues(resource);
    return issues.length > 0 || req.validateOnly ? { issues } : { issues, index: this.indexer.extract(resource) };
  }
  prepareNow(resource: Resource): Prepared {
    return this.handle({ resource });
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

/**
 * Validation and index extraction in worker threads, beside the event loop (on a 2-core machine
 * the main thread does HTTP, crypto and SQLite; a worker does the rest). Falls back to the
 * inline path while no worker is ready.
 */
export class WorkerPreparer implements WritePreparer {
  private readonly inline: InlinePreparer;
  private readonly pool: WorkerPool<PrepareRequest, Prepared>;

  constructor(indexKey: Buffer, size: number, logger: Logger) {
    this.inline = new InlinePreparer(indexKey);
    this.pool = new WorkerPool({
      name: 'write', entry: new URL('./write-worker.js', import.meta.url), workerData: { indexKey }, size, logger, toError: fromWorkerFailure,
    });
  }

  get ready(): boolean {
    return this.pool.ready;
  }

  prepareNow(resource: Resource): Prepared {
    return this.inline.prepareNow(resource);
  }

  indexNow(resource: Resource): IndexRows {
    return this.inline.indexNow(resource);
  }

  async validate(resource: Resource): Promise<OperationOutcomeIssue[]> {
    return (await this.run({ resource, validateOnly: true })).issues;
  }

  prepare(resource: Resource): Promise<Prepared> {
    return this.run({ resource });
  }

  /** In a worker when one is ready; here when none is, or when the worker died under the request. */
  private async run(req: PrepareRequest): Promise<Prepared> {
    const inWorker = this.pool.run(req);
    if (inWorker) {
      try {
        return await inWorker;
      } catch {
        // Validation reports problems as issues, so a rejection means the worker itself failed.
      }
    }
    return this.inline.handle(req);
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}
