/**
 * RFC 9162 (Certificate Transparency v2) Merkle trees and inclusion proofs for ledger batches.
 *
 * Hashing (RFC 9162 section 2.1.1, SHA-256):
 *   MTH({})      = SHA-256()                                  (empty tree)
 *   MTH({d0})    = SHA-256(0x00 || d0)                        (leaf hash)
 *   MTH(D[n])    = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n])) (k = largest power of two < n)
 * The 0x00 / 0x01 domain-separation prefixes make a leaf hash and an interior node hash
 * incomparable, which defeats second-preimage attacks that present an interior node as a leaf.
 *
 * In Custos an entry is the 32-byte SHA-256 content hash of a stored resource version, so the
 * leaves are hashes of hashes. `MerkleTree` rejects entries of any other length, and the
 * verifiers refuse to prove such an entry.
 *
 * Stored levels: level 0 holds the leaf hashes; level i+1 pairs up level i left to right, and an
 * unpaired last node of an odd-length level is carried up unchanged. Carrying the lone right node
 * upward produces exactly the RFC's split-at-the-largest-power-of-two tree (the left part of every
 * split is a complete subtree, so pairing from the left never crosses a split), which is why
 * PATH(m, D[n]) is the list of existing siblings met while walking up from leaf m, skipping the
 * levels at which the node has no sibling. The test suite checks this against a recursive
 * reference implementation for every tree size 1..70 and every index.
 */
import * as crypto from 'node:crypto';

export const HASH_BYTES = 32;

const LEAF_PREFIX = 0x00;
const NODE_PREFIX = 0x01;

// One-shot crypto.hash (Node >= 20.12) is about twice as fast as createHash for 33/65-byte inputs;
// fall back to createHash on older Node 20 releases.
const sha256: (data: Uint8Array) => Buffer =
  typeof crypto.hash === 'function'
    ? (data) => crypto.hash('sha256', data, 'buffer')
    : (data) => crypto.createHash('sha256').update(data).digest();

// Reusable inputs for the common 32-byte case. Hashing is synchronous and the digest is a fresh
// buffer, so sharing these between calls is safe.
const LEAF_INPUT = Buffer.alloc(1 + HASH_BYTES, LEAF_PREFIX);
const NODE_INPUT = Buffer.alloc(1 + 2 * HASH_BYTES);
NODE_INPUT[0] = NODE_PREFIX;

const EMPTY_ROOT: Buffer = sha256(new Uint8Array(0));

/** RFC 9162 leaf hash: SHA-256(0x00 || entry). Accepts data of any length (the RFC's leaf input is arbitrary). */
export function leafHash(entry: Uint8Array): Buffer {
  if (entry.length === HASH_BYTES) {
    LEAF_INPUT.set(entry, 1);
    return sha256(LEAF_INPUT);
  }
  return sha256(Buffer.concat([LEAF_INPUT.subarray(0, 1), entry]));
}

/** RFC 9162 interior node hash: SHA-256(0x01 || left || right). */
export function nodeHash(left: Uint8Array, right: Uint8Array): Buffer {
  if (left.length === HASH_BYTES && right.length === HASH_BYTES) {
    NODE_INPUT.set(left, 1);
    NODE_INPUT.set(right, 1 + HASH_BYTES);
    return sha256(NODE_INPUT);
  }
  return sha256(Buffer.concat([NODE_INPUT.subarray(0, 1), left, right]));
}

/** A tree over entries, built once in O(n) hashing; root and proofs without recomputing. */
export class MerkleTree {
  readonly size: number;
  /** levels[0] = leaf hashes, levels[last] = root; each level is one contiguous buffer of 32-byte hashes. */
  readonly #levels: Buffer[];
  readonly #root: Buffer;

  /** Entries in leaf order; throws a TypeError/RangeError on an entry that is not a 32-byte Uint8Array. */
  constructor(entries: readonly Uint8Array[]) {
    const n = entries.length;
    this.size = n;
    this.#levels = [];
    if (n === 0) {
      this.#root = EMPTY_ROOT;
      return;
    }
    let level = Buffer.allocUnsafe(n * HASH_BYTES);
    for (let i = 0; i < n; i++) {
      const entry = entries[i];
      if (!(entry instanceof Uint8Array)) throw new TypeError(`merkle: entry ${i} is not a Uint8Array`);
      if (entry.length !== HASH_BYTES) {
        throw new RangeError(`merkle: entry ${i} is ${entry.length} bytes, expected ${HASH_BYTES}`);
      }
      leafHash(entry).copy(level, i * HASH_BYTES);
    }
    this.#levels.push(level);
    let len = n;
    while (len > 1) {
      const nextLen = Math.ceil(len / 2);
      const next = Buffer.allocUnsafe(nextLen * HASH_BYTES);
      for (let j = 0; j < nextLen; j++) {
        const l = 2 * j;
        if (l + 1 < len) {
          // The pair is contiguous in the level buffer: copy both children at once.
          level.copy(NODE_INPUT, 1, l * HASH_BYTES, (l + 2) * HASH_BYTES);
          sha256(NODE_INPUT).copy(next, j * HASH_BYTES);
        } else {
          // Lone right node of an odd-length level: carried up unchanged (RFC unbalanced right edge).
          level.copy(next, j * HASH_BYTES, l * HASH_BYTES, (l + 1) * HASH_BYTES);
        }
      }
      this.#levels.push(next);
      level = next;
      len = nextLen;
    }
    this.#root = level;
  }

  /** MTH(D[n]); for n = 0 the hash of the empty string. A fresh copy on every read. */
  get root(): Buffer {
    return Buffer.from(this.#root);
  }

  /** The leaf hash SHA-256(0x00 || entry) at index (a copy); RangeError outside [0, size). */
  leaf(index: number): Buffer {
    this.#checkIndex(index);
    return copyHash(this.#levels[0]!, index);
  }

  /** PATH(index, D[n]) of RFC 9162 2.1.3.1: sibling hashes bottom-up (copies); RangeError outside [0, size). */
  inclusionProof(index: number): Buffer[] {
    this.#checkIndex(index);
    const proof: Buffer[] = [];
    let m = index;
    let len = this.size;
    for (let d = 0; len > 1; d++) {
      const sibling = m % 2 === 0 ? m + 1 : m - 1;
      // No sibling: m is the lone last node of an odd-length level, which the RFC tree carries up.
      if (sibling < len) proof.push(copyHash(this.#levels[d]!, sibling));
      m = Math.floor(m / 2);
      len = Math.ceil(len / 2);
    }
    return proof;
  }

  #checkIndex(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.size) {
      throw new RangeError(`merkle: index ${String(index)} outside [0, ${this.size})`);
    }
  }
}

/**
 * RFC 9162 2.1.3.2 on a leaf hash (the RFC's "hash" input): the root the proof leads to, or undefined
 * when the proof cannot be a PATH for leafIndex/treeSize (leafIndex >= treeSize, too many or too few
 * elements, an element or leaf hash that is not 32 bytes, or a non-integer/unsafe index or size).
 * Lower-level than rootFromInclusionProof; useful when only leaf hashes are stored, and for
 * checking published test vectors whose leaves are not 32-byte entries.
 */
export function rootFromLeafHashInclusionProof(
  leaf: Uint8Array,
  leafIndex: number,
  treeSize: number,
  proof: readonly Uint8Array[],
): Buffer | undefined {
  if (!Number.isSafeInteger(leafIndex) || !Number.isSafeInteger(treeSize)) return undefined;
  if (leafIndex < 0 || leafIndex >= treeSize) return undefined;
  if (!(leaf instanceof Uint8Array) || leaf.length !== HASH_BYTES) return undefined;
  // Integer arithmetic instead of bit operators: JS bit operators truncate to 32 bits.
  let fn = leafIndex;
  let sn = treeSize - 1;
  let r: Buffer = Buffer.from(leaf);
  for (const p of proof) {
    if (!(p instanceof Uint8Array) || p.length !== HASH_BYTES) return undefined;
    if (sn === 0) return undefined; // more elements than the path has levels
    if (fn % 2 === 1 || fn === sn) {
      r = nodeHash(p, r);
      // A right-edge node without a sibling at the levels below: skip them.
      while (fn % 2 === 0 && fn !== 0) {
        fn = Math.floor(fn / 2);
        sn = Math.floor(sn / 2);
      }
    } else {
      r = nodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  if (sn !== 0) return undefined; // fewer elements than needed to reach the root
  return r;
}

/**
 * The root an inclusion proof for entry (the 32-byte entry, not its leaf hash) at index in a tree of
 * treeSize leads to, for diagnostics ("the path leads to X, the chain has Y"). Undefined when the proof
 * has the wrong length for index/treeSize, or the entry or a proof element is not 32 bytes, or
 * index/treeSize are not integers with 0 <= index < treeSize.
 */
export function rootFromInclusionProof(
  entry: Uint8Array,
  index: number,
  treeSize: number,
  proof: readonly Uint8Array[],
): Buffer | undefined {
  if (!(entry instanceof Uint8Array) || entry.length !== HASH_BYTES) return undefined;
  return rootFromLeafHashInclusionProof(leafHash(entry), index, treeSize, proof);
}

/** RFC 9162 2.1.3.2: true iff the proof shows entry (not its leaf hash) at index in a tree of treeSize with this root. */
export function verifyInclusion(
  entry: Uint8Array,
  index: number,
  treeSize: number,
  proof: readonly Uint8Array[],
  root: Uint8Array,
): boolean {
  if (!(root instanceof Uint8Array) || root.length !== HASH_BYTES) return false;
  const computed = rootFromInclusionProof(entry, index, treeSize, proof);
  return computed !== undefined && computed.equals(root);
}

/** A standalone copy of hash i of a level, so callers cannot corrupt the stored tree. */
function copyHash(level: Buffer, i: number): Buffer {
  const out = Buffer.allocUnsafe(HASH_BYTES);
  level.copy(out, 0, i * HASH_BYTES, (i + 1) * HASH_BYTES);
  return out;
}
