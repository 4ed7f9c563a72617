/** Worker thread: runs searches on its own read-only connection, beside the event loop. */
import { workerData } from 'node:worker_threads';
import { openSqliteReader } from '../store/index.js';
import { serveRequests } from '../workers.js';
import { loadDefinitions } from './definitions.js';
import { toWorkerFailure } from './outcome.js';
import { searchReply, type SearchArgs } from './search-service.js';

loadDefinitions();
const { file, kek, indexKey } = workerData as { file: string; kek: Uint8Array; indexKey: Uint8Array };
const reader = openSqliteReader({ file, keys: { kek: Buffer.from(kek), indexKey: Buffer.from(indexKey) } });
// Serialized here: a string crosses the thread boundary far cheaper than the object graph.
serveRequests((args: SearchArgs) => searchReply(reader, args), toWorkerFailure);
