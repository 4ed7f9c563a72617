import { parentPort, Worker } from 'node:worker_threads';
import type { Logger } from 'pino';

/**
 * Starts a worker thread for a sibling module given as `new URL('./x.js', import.meta.url)`.
 * Built, the module is .js. Run from TypeScript sources under tsx (tests), the worker registers
 * tsx itself first: Node 20 does not carry --import loaders into workers.
 */
export function startWorker(entry: URL, workerData: unknown): Worker {
  if (!import.meta.url.endsWith('.ts')) return new Worker(entry, { workerData });
  const source = new URL(entry.href.replace(/\.js$/, '.ts'));
  const boot = `import('tsx/esm/api').then((t) => { t.register(); return import(${JSON.stringify(source.href)}); });`;
  return new Worker(boot, { eval: true, workerData });
}

/** A failure inside a worker, as it crosses back: enough to rebuild the error on this side. */
export interface WorkerFailure { message: string; status?: number; issues?: unknown[] }

type Reply<Res> = { ready: true } | { id: number; ok: true; value: Res } | { id: number; ok: false; error: WorkerFailure };

interface Slot { worker: Worker; ready: boolean; inFlight: number }

const MAX_RESTARTS = 10;

/**
 * A few worker threads answering requests. `run` returns undefined while no worker is ready (or
 * after they keep dying), so the caller does the work on its own thread instead.
 */
export class WorkerPool<Req, Res> {
  private readonly slots: Slot[] = [];
  private readonly pending = new Map<number, { resolve: (v: Res) => void; reject: (e: unknown) => void; slot: Slot }>();
  private nextId = 1;
  private closed = false;
  private restarts = 0;

  constructor(private readonly opts: {
    name: string;
    entry: URL;
    workerData: unknown;
    size: number;
    logger: Logger;
    /** Rebuilds an error thrown in the worker (e.g. as a FhirError). */
    toError: (f: WorkerFailure) => unknown;
  }) {
    for (let i = 0; i < opts.size; i++) this.slots.push(this.spawn());
  }

  get ready(): boolean {
    return this.slots.some((s) => s.ready);
  }

  private spawn(): Slot {
    const worker = startWorker(this.opts.entry, this.opts.workerData);
    const slot: Slot = { worker, ready: false, inFlight: 0 };
    worker.unref();
    worker.on('message', (msg: Reply<Res>) => {
      if ('ready' in msg) {
        slot.ready = true;
        return;
      }
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      slot.inFlight--;
      if (msg.ok) p.resolve(msg.value);
      else p.reject(this.opts.toError(msg.error));
    });
    worker.on('error', (err) => this.opts.logger.error({ err, worker: this.opts.name }, 'worker failed'));
    worker.on('exit', (code) => {
      for (const [id, p] of this.pending) {
        if (p.slot === slot) {
          this.pending.delete(id);
          p.reject(new Error(`${this.opts.name} worker exited with code ${code}`));
        }
      }
      const i = this.slots.indexOf(slot);
      if (this.closed || i < 0) return;
      // A worker that dies before it was ever ready will not do better next time.
      if (!slot.ready || ++this.restarts > MAX_RESTARTS) {
        this.opts.logger.error({ code, worker: this.opts.name }, 'worker exited; doing its work on the main thread from now on');
        this.slots.splice(i, 1);
        return;
      }
      this.opts.logger.warn({ code, worker: this.opts.name }, 'worker exited; starting another');
      this.slots[i] = this.spawn();
    });
    return slot;
  }

  run(req: Req): Promise<Res> | undefined {
    if (this.closed) return undefined;
    let slot: Slot | undefined;
    for (const s of this.slots) if (s.ready && (!slot || s.inFlight < slot.inFlight)) slot = s;
    if (!slot) return undefined;
    const id = this.nextId++;
    const chosen = slot;
    chosen.inFlight++;
    return new Promise<Res>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, slot: chosen });
      chosen.worker.postMessage({ id, req });
    });
  }

  /** Lets the requests in flight finish (up to a few seconds), then stops the workers. */
  async close(): Promise<void> {
    this.closed = true;
    for (let waited = 0; this.pending.size > 0 && waited < 5000; waited += 10) await new Promise((r) => setTimeout(r, 10));
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}

/** Worker side of WorkerPool: answers each request with `handle`, then says it is ready. */
export function serveRequests<Req, Res>(handle: (req: Req) => Res | Promise<Res>, toFailure: (err: unknown) => WorkerFailure): void {
  const port = parentPort!;
  port.on('message', async (msg: { id: number; req: Req }) => {
    try {
      port.postMessage({ id: msg.id, ok: true, value: await handle(msg.req) });
    } catch (err) {
      port.postMessage({ id: msg.id, ok: false, error: toFailure(err) });
    }
  });
  port.postMessage({ ready: true });
}
