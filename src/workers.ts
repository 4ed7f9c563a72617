import { Worker } from 'node:worker_threads';

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
