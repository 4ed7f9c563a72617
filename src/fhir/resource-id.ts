import { randomFillSync } from 'node:crypto';

/**
 * A server-assigned resource id: a UUID version 7 (RFC 9562), the millisecond time in its first
 * 48 bits and 74 random bits. Ids made one after the other sort together, so the store's
 * (type, id) index grows at its end instead of at a random page per write (fewer pages written
 * per commit); they reveal no more than the resource's meta.lastUpdated already does.
 */
export function newResourceId(now = Date.now()): string {
  const b = randomFillSync(Buffer.alloc(16));
  b.writeUIntBE(now, 0, 6);
  b[6] = 0x70 | (b[6]! & 0x0f);
  b[8] = 0x80 | (b[8]! & 0x3f);
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
