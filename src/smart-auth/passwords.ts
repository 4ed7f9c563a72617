import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { Worker } from 'node:worker_threads';
import { startWorker } from '../workers.js';
import type { DeriveJob, DeriveReply } from './password-worker.js';

/** scrypt cost parameters for new hashes: N=2^15, r=8, p=1 (about 32 MiB and ~50-100 ms per hash). */
const N = 2 ** 15;
const R = 8;
const P = 1;
const SALT_BYTES = 16;
const KEY_BYTES = 32;

/** Bounds accepted when verifying, so a malformed or hostile hash cannot make us burn memory or CPU. */
const MAX_N = 2 ** 20;
const MAX_R = 32;
const MAX_P = 16;
const MAX_MEM_BYTES = 1024 * 1024 * 1024;

const B64URL = /^[A-Za-z0-9_-]+$/;

function maxmem(n: number, r: number, p: number): number {
  // scrypt needs about 128*N*r (V) + 128*r*p (B) bytes; node's default limit (32 MiB) is too small for N=2^15, r=8.
  return 128 * n * r + 128 * r * p + 16 * 1024 * 1024;
}

type ScryptParams = { N: number; r: number; p: number; maxmem: number };

/** A login refused because too many password checks are already waiting (answer 429). */
export class PasswordBusyError extends Error {
  constructor() {
    super('too many sign-ins are being checked right now');
  }
}

/**
 * Runs scrypt on a thread of its own, one hash at a time. Node's async scrypt runs on the libuv
 * thread pool, whose four threads also do the WAL fdatasync of every write: a burst of logins
 * (wrong passwords cost as much as right ones) would hold every pool thread and stall durable
 * writes. Verifications beyond `maxQueued` waiting ones are refused (PasswordBusyError) instead of
 * queued without bound; hashing a new password (operators adding users) always queues.
 * The thread starts on first use and does not keep the process alive while idle.
 */
export class PasswordHasher {
  private worker?: Worker;
  private readonly pending = new Map<number, { resolve: (key: Buffer) => void; reject: (err: Error) => void }>();
  private nextId = 1;
  private closed = false;
  private started = 0;

  constructor(private readonly o: { maxQueued: number } = { maxQueued: 16 }) {}

  /** Hash a password as `scrypt$N$r$p$<salt b64url>$<hash b64url>`. */
  async hash(password: string): Promise<string> {
    if (typeof password !== 'string') throw new TypeError('password must be a string');
    const salt = randomBytes(SALT_BYTES);
    const key = await this.derive(password, salt, KEY_BYTES, { N, r: R, p: P, maxmem: maxmem(N, R, P) }, false);
    return `scrypt$${N}$${R}$${P}$${salt.toString('base64url')}$${key.toString('base64url')}`;
  }

  /**
   * Check a password against an encoded hash. False on mismatch and on any malformed input;
   * throws only PasswordBusyError (nothing was checked).
   */
  async verify(password: string, encoded: string): Promise<boolean> {
    if (typeof password !== 'string' || typeof encoded !== 'string') return false;
    const parsed = parseHash(encoded);
    if (!parsed) return false;
    let actual: Buffer;
    try {
      actual = await this.derive(password, parsed.salt, parsed.expected.length, parsed.params, true);
    } catch (err) {
      if (err instanceof PasswordBusyError) throw err;
      return false;
    }
    return timingSafeEqual(actual, parsed.expected);
  }

  /** Password checks waiting or running. */
  get queued(): number {
    return this.pending.size;
  }

  /** Password checks (verifications) started since this hasher was made. */
  get checks(): number {
    return this.started;
  }

  async close(): Promise<void> {
    this.closed = true;
    const w = this.worker;
    this.worker = undefined;
    await w?.terminate();
  }

  private derive(password: string, salt: Buffer, keylen: number, params: ScryptParams, bounded: boolean): Promise<Buffer> {
    if (this.closed) return Promise.reject(new Error('the password hasher is closed'));
    // The one running counts too: maxQueued waiting behind it.
    if (bounded && this.pending.size > this.o.maxQueued) return Promise.reject(new PasswordBusyError());
    if (bounded) this.started++;
    const worker = this.thread();
    const id = this.nextId++;
    const job: DeriveJob = { id, password: password.normalize('NFC'), salt, keylen, ...params };
    return new Promise<Buffer>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      if (this.pending.size === 1) worker.ref();
      worker.postMessage(job);
    });
  }

  private thread(): Worker {
    if (this.worker) return this.worker;
    const worker = startWorker(new URL('./password-worker.js', import.meta.url), undefined);
    worker.unref();
    worker.on('message', (m: DeriveReply) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (this.pending.size === 0) worker.unref();
      if ('key' in m) p.resolve(Buffer.from(m.key.buffer, m.key.byteOffset, m.key.byteLength));
      else p.reject(new Error(m.error));
    });
    worker.on('error', () => undefined); // followed by 'exit', which fails what was pending
    worker.on('exit', (code) => {
      if (this.worker === worker) this.worker = undefined;
      for (const [id, p] of this.pending) {
        this.pending.delete(id);
        p.reject(new Error(`the password hashing thread exited with code ${code}`));
      }
    });
    this.worker = worker;
    return worker;
  }
}

let shared: PasswordHasher | undefined;

/** For callers without a configured hasher (the CLI, tests): its thread starts on first use. */
export function sharedPasswordHasher(): PasswordHasher {
  return (shared ??= new PasswordHasher());
}

function b64urlDecode(s: string): Buffer | undefined {
  if (!B64URL.test(s)) return undefined;
  const buf = Buffer.from(s, 'base64url');
  // Reject non-canonical encodings (e.g. stray trailing bits) so only what we wrote round-trips.
  return buf.toString('base64url') === s ? buf : undefined;
}

/** Hash a password as `scrypt$N$r$p$<salt b64url>$<hash b64url>`. */
export function hashPassword(password: string): Promise<string> {
  return sharedPasswordHasher().hash(password);
}

function parseIntParam(s: string | undefined, max: number): number | undefined {
  if (s === undefined || !/^[1-9][0-9]{0,9}$/.test(s)) return undefined;
  const n = Number(s);
  return n <= max ? n : undefined;
}

function parseHash(encoded: string): { params: ScryptParams; salt: Buffer; expected: Buffer } | undefined {
  const parts = encoded.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return undefined;
  const n = parseIntParam(parts[1], MAX_N);
  const r = parseIntParam(parts[2], MAX_R);
  const p = parseIntParam(parts[3], MAX_P);
  if (n === undefined || r === undefined || p === undefined) return undefined;
  if (n < 2 || (n & (n - 1)) !== 0) return undefined; // N must be a power of two > 1
  const mem = maxmem(n, r, p);
  if (mem > MAX_MEM_BYTES) return undefined;
  const salt = b64urlDecode(parts[4]!);
  const expected = b64urlDecode(parts[5]!);
  // Only the key and salt sizes we write: a shorter key would still match (scrypt output prefixes agree).
  if (!salt || !expected || salt.length < SALT_BYTES || expected.length !== KEY_BYTES) return undefined;
  return { params: { N: n, r, p, maxmem: mem }, salt, expected };
}

/** Check a password against an encoded hash. False on mismatch and on any malformed input; throws only PasswordBusyError. */
export function verifyPassword(password: string, encoded: string): Promise<boolean> {
  return sharedPasswordHasher().verify(password, encoded);
}
