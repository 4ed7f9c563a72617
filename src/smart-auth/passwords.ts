import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';

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

function derive(password: string, salt: Buffer, keylen: number, opts: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password.normalize('NFC'), salt, keylen, opts, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

function b64urlDecode(s: string): Buffer | undefined {
  if (!B64URL.test(s)) return undefined;
  const buf = Buffer.from(s, 'base64url');
  // Reject non-canonical encodings (e.g. stray trailing bits) so only what we wrote round-trips.
  return buf.toString('base64url') === s ? buf : undefined;
}

/** Hash a password as `scrypt$N$r$p$<salt b64url>$<hash b64url>`. */
export async function hashPassword(password: string): Promise<string> {
  if (typeof password !== 'string') throw new TypeError('password must be a string');
  const salt = randomBytes(SALT_BYTES);
  const key = await derive(password, salt, KEY_BYTES, { N, r: R, p: P, maxmem: maxmem(N, R, P) });
  return `scrypt$${N}$${R}$${P}$${salt.toString('base64url')}$${key.toString('base64url')}`;
}

function parseIntParam(s: string | undefined, max: number): number | undefined {
  if (s === undefined || !/^[1-9][0-9]{0,9}$/.test(s)) return undefined;
  const n = Number(s);
  return n <= max ? n : undefined;
}

/** Check a password against an encoded hash. False on mismatch and on any malformed input; never throws. */
export async function verifyPassword(password: string, encoded: string): Promise<boolean> {
  try {
    if (typeof password !== 'string' || typeof encoded !== 'string') return false;
    const parts = encoded.split('$');
    if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
    const n = parseIntParam(parts[1], MAX_N);
    const r = parseIntParam(parts[2], MAX_R);
    const p = parseIntParam(parts[3], MAX_P);
    if (n === undefined || r === undefined || p === undefined) return false;
    if (n < 2 || (n & (n - 1)) !== 0) return false; // N must be a power of two > 1
    const mem = maxmem(n, r, p);
    if (mem > MAX_MEM_BYTES) return false;
    const salt = b64urlDecode(parts[4]!);
    const expected = b64urlDecode(parts[5]!);
    // Only the key and salt sizes we write: a shorter key would still match (scrypt output prefixes agree).
    if (!salt || !expected || salt.length < SALT_BYTES || expected.length !== KEY_BYTES) return false;
    const actual = await derive(password, salt, expected.length, { N: n, r, p, maxmem: mem });
    return timingSafeEqual(actual, expected);
  } catch {
    return false;
  }
}
