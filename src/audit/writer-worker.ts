/**
 * Worker thread of AuditWriterThread: writes the AuditEvents of reads, searches and refusals on
 * its own connection, in batches within AUDIT_FLUSH_MS.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { loadDefinitions } from '../fhir/definitions.js';
import { Blinder, SqliteStore, WriterTurns } from '../store/index.js';
import { AuditRecorder, WRITE_AT } from './recorder.js';
import { factsFromJson, type AuditWriterData, type FromAuditWriter, type ToAuditWriter } from './writer-thread.js';

loadDefinitions();
const data = workerData as AuditWriterData;
const keys = { kek: Buffer.from(data.kek), indexKey: Buffer.from(data.indexKey) };
const turns = data.turns ? new WriterTurns(data.turns) : undefined;
// The server's store checkpoints the WAL; this connection only writes, and lets the server's writes go first.
const store = SqliteStore.open({ file: data.file, keys, noCheckpoints: true, ...(turns ? { turns: { shared: turns, as: 'other' as const } } : {}) });
const blinder = new Blinder(keys.indexKey);
const port = parentPort!;
const recorder = new AuditRecorder({
  store, blinder, flushMs: data.flushMs, observer: data.observer,
  ...(turns ? { yieldWhen: () => turns.mainWaiting } : {}),
  onWritten: (n) => port.postMessage({ t: 'written', n } satisfies FromAuditWriter),
});

port.on('message', (m: ToAuditWriter) => {
  if (m.t === 'facts') {
    for (const f of factsFromJson(m.json)) recorder.later(f);
    // Under load, write each full transaction's worth at once rather than on the timer.
    if (recorder.queued >= WRITE_AT) void recorder.flush().catch(() => undefined);
    return;
  }
  const done = (error?: unknown) => port.postMessage({ t: 'done', id: m.id, ...(error ? { error: String((error as Error).message ?? error) } : {}) } satisfies FromAuditWriter);
  if (m.t === 'flush') {
    recorder.flush().then(() => done(), done);
  } else {
    recorder.close().then(() => store.close()).then(() => done(), done);
  }
});
port.postMessage({ t: 'ready' } satisfies FromAuditWriter);
