/**
 * Worker thread: moves WAL pages into the database file (PASSIVE checkpoints, which never block
 * the writer), so that most of that copying and its fsync are not paid inside a request's commit.
 */
import Database from 'better-sqlite3';
import { parentPort, workerData } from 'node:worker_threads';

const { file, intervalMs } = workerData as { file: string; intervalMs: number };
const db = new Database(file);
db.pragma('busy_timeout = 5000');
const timer = setInterval(() => {
  try {
    db.pragma('wal_checkpoint(PASSIVE)');
  } catch {
    // Busy or locked: the next tick tries again.
  }
}, intervalMs);

parentPort!.on('message', (msg: string) => {
  if (msg !== 'stop') return;
  clearInterval(timer);
  try {
    db.pragma('wal_checkpoint(TRUNCATE)');
  } finally {
    db.close();
    parentPort!.postMessage('stopped');
  }
});
parentPort!.postMessage('ready');
