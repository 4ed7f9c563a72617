import { createHash } from 'node:crypto';
import canonicalize from 'canonicalize';

/** RFC 8785 canonical JSON of a value. */
export function canonicalJson(value: unknown): string {
  const s = (canonicalize as unknown as (v: unknown) => string | undefined)(value);
  if (s === undefined) throw new Error('value cannot be canonicalized');
  return s;
}

/** SHA-256 (hex) over the RFC 8785 canonical JSON: the hash the ledger anchors. */
export function contentHash(value: unknown): string {
  return createHash('sha256').update(canonicalJson(value), 'utf8').digest('hex');
}
