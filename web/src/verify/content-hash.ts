/**
 * The content hash of a resource version as the server computes it (src/store/content-hash.ts):
 * SHA-256 over the RFC 8785 canonical JSON. The server's serializer is a faster copy held by its
 * tests to the `canonicalize` package's output, so the browser uses that package (an independent
 * implementation of the same RFC) and WebCrypto.
 */
import canonicalize from 'canonicalize';
import { toHex } from './hex.js';

export async function sha256(...parts: Uint8Array[]): Promise<Uint8Array> {
  const len = parts.reduce((n, p) => n + p.length, 0);
  const buf = new Uint8Array(len);
  let o = 0;
  for (const p of parts) { buf.set(p, o); o += p.length; }
  return new Uint8Array(await crypto.subtle.digest('SHA-256', buf));
}

export function canonicalJson(value: unknown): string {
  const s = canonicalize(value);
  if (s === undefined) throw new Error('value cannot be canonicalized');
  return s;
}

/** SHA-256 (hex) of the RFC 8785 canonical JSON of a resource. */
export async function contentHash(resource: unknown): Promise<string> {
  return toHex(await sha256(new TextEncoder().encode(canonicalJson(resource))));
}
