import { randomUUID } from 'node:crypto';

/**
 * A server-assigned resource id: a UUID version 7 (RFC 9562), the millisecond time in its first
 * 48 bits and 74 random bits. Ids made one after the other sort together, so the store's
 * (type, id) index grows at its end instead of at a random page per write (fewer pages written
 * per commit); they reveal no more than the resource's meta.lastUpdated already does.
 * The random bits come from randomUUID(), which draws from a pooled buffer (a fresh
 * randomFillSync per id costs a call into OpenSSL each time).
 */
export function newResourceId(now = Date.now()): string {
  const v4 = randomUUID();
  const t = now.toString(16).padStart(12, '0');
  return `${t.slice(0, 8)}-${t.slice(8, 12)}-7${v4.slice(15)}`;
}
