/**
 * RFC 9162 (Certificate Transparency v2) inclusion proofs, as src/ledger/merkle.ts builds them:
 * leaf = SHA-256(0x00 || entry), node = SHA-256(0x01 || left || right); the audit path lists the
 * siblings bottom-up. The entry is the 32-byte content hash of a version.
 */
import { sha256 } from './content-hash.js';

const HASH_BYTES = 32;

export const leafHash = (entry: Uint8Array) => sha256(Uint8Array.of(0x00), entry);
export const nodeHash = (left: Uint8Array, right: Uint8Array) => sha256(Uint8Array.of(0x01), left, right);

/**
 * RFC 9162 2.1.3.2: the root an audit path leads to from entry at leafIndex in a tree of treeSize;
 * undefined when the path cannot be one for that index and size.
 */
export async function rootFromInclusionProof(entry: Uint8Array, leafIndex: number, treeSize: number, path: readonly Uint8Array[]): Promise<Uint8Array | undefined> {
  if (!Number.isSafeInteger(leafIndex) || !Number.isSafeInteger(treeSize) || leafIndex < 0 || leafIndex >= treeSize) return undefined;
  if (entry.length !== HASH_BYTES) return undefined;
  // Integer arithmetic, not bit operators (which truncate to 32 bits).
  let fn = leafIndex;
  let sn = treeSize - 1;
  let r = await leafHash(entry);
  for (const p of path) {
    if (p.length !== HASH_BYTES || sn === 0) return undefined;
    if (fn % 2 === 1 || fn === sn) {
      r = await nodeHash(p, r);
      while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
    } else {
      r = await nodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 ? r : undefined;
}
