/**
 * Worker thread: validation against the R4 StructureDefinitions and search-index extraction,
 * the CPU-heavy, side-effect-free part of a write, so it runs beside the event loop.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { Resource } from '@medplum/fhirtypes';
import { Blinder, createIndexer } from '../store/index.js';
import { loadDefinitions } from './definitions.js';
import { validationIssues } from './validate.js';
import type { PrepareReply, PrepareRequest } from './write-pool.js';

loadDefinitions();
const indexer = createIndexer(new Blinder(Buffer.from(workerData.indexKey as Uint8Array)));

parentPort!.on('message', (msg: PrepareRequest) => {
  let reply: PrepareReply;
  try {
    const issues = validationIssues(msg.resource as Resource);
    reply = issues.length > 0 || msg.validateOnly ? { id: msg.id, issues } : { id: msg.id, issues, index: indexer.extract(msg.resource as Resource) };
  } catch (err) {
    reply = { id: msg.id, error: (err as Error).message ?? String(err) };
  }
  parentPort!.postMessage(reply);
});
parentPort!.postMessage({ ready: true });
