import { scryptSync } from 'node:crypto';
import { parentPort } from 'node:worker_threads';

/** The password hashing thread (see passwords.ts): one scrypt at a time, off the libuv pool. */
export interface DeriveJob { id: number; password: string; salt: Uint8Array; keylen: number; N: number; r: number; p: number; maxmem: number }
export type DeriveReply = { id: number; key: Uint8Array } | { id: number; error: string };

parentPort!.on('message', (job: DeriveJob) => {
  let reply: DeriveReply;
  try {
    const key = scryptSync(job.password, job.salt, job.keylen, { N: job.N, r: job.r, p: job.p, maxmem: job.maxmem });
    reply = { id: job.id, key };
  } catch (err) {
    reply = { id: job.id, error: (err as Error).message };
  }
  parentPort!.postMessage(reply);
});
