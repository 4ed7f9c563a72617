/**
 * Worker thread: validation against the R4 StructureDefinitions and search-index extraction,
 * the CPU-heavy, side-effect-free part of a write, so it runs beside the event loop.
 */
import { workerData } from 'node:worker_threads';
import { serveRequests } from '../workers.js';
import { loadDefinitions } from './definitions.js';
import { toWorkerFailure } from './outcome.js';
import { InlinePreparer } from './write-pool.js';

loadDefinitions();
const preparer = new InlinePreparer(Buffer.from(workerData.indexKey as Uint8Array));
serveRequests((req) => preparer.handle(req as Parameters<InlinePreparer['handle']>[0]), toWorkerFailure);
