import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import {
  HASH_BYTES,
  leafHash,
  MerkleTree,
  nodeHash,
  rootFromInclusionProof,
  rootFromLeafHashInclusionProof,
  verifyInclusion,
} from '../src/ledger/merkle.js';

const sha256 = (data: Uint8Array | string): Buffer => createHash('sha256').update(data).digest();
const hex = (h: string): Buffer => Buffer.from(h, 'hex');
/** Deterministic 32-byte entries (stand-ins for resource-version content hashes). */
const entriesOf = (n: number, salt = 'entry'): Buffer[] => Array.from({ length: n }, (_, i) => sha256(`${salt}-${i}`));
const flipBit = (b: Uint8Array, bit: number): Buffer => {
  const c = Buffer.from(b);
  const i = (bit >>> 3) % c.length;
  c[i] = c[i]! ^ (1 << (bit & 7));
  return c;
};

// ---------------------------------------------------------------------------------------------
// Straightforward recursive reference, transcribed from RFC 9162 2.1.1 and 2.1.3.1. Operates on
// raw leaf data of any length so it can also be checked against published test vectors.
// ---------------------------------------------------------------------------------------------
function largestPowerOfTwoBelow(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}
function refMTH(d: readonly Uint8Array[]): Buffer {
  const n = d.length;
  if (n === 0) return sha256(Buffer.alloc(0));
  if (n === 1) return sha256(Buffer.concat([Buffer.from([0x00]), d[0]!]));
  const k = largestPowerOfTwoBelow(n);
  return sha256(Buffer.concat([Buffer.from([0x01]), refMTH(d.slice(0, k)), refMTH(d.slice(k))]));
}
function refPATH(m: number, d: readonly Uint8Array[]): Buffer[] {
  const n = d.length;
  if (n === 1) return [];
  const k = largestPowerOfTwoBelow(n);
  return m < k ? [...refPATH(m, d.slice(0, k)), refMTH(d.slice(k))] : [...refPATH(m - k, d.slice(k)), refMTH(d.slice(0, k))];
}
/** Which side each PATH element sits on (true = sibling is on the left), per the reference split. */
function refSides(m: number, n: number): boolean[] {
  if (n === 1) return [];
  const k = largestPowerOfTwoBelow(n);
  return m < k ? [...refSides(m, k), false] : [...refSides(m - k, n - k), true];
}

describe('RFC 9162 hashing primitives', () => {
  it('empty tree hash is SHA-256 of the empty string', () => {
    const empty = hex('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
    const tree = new MerkleTree([]);
    assert.equal(tree.size, 0);
    assert.deepEqual(tree.root, empty);
    assert.deepEqual(refMTH([]), empty);
  });

  it('leaf and node hashes use the 0x00 / 0x01 prefixes (transparency-dev/merkle rfc6962 vectors)', () => {
    assert.equal(HASH_BYTES, 32);
    // Empty leaf: echo -n 00 | xxd -r -p | sha256sum; distinct from the empty tree hash.
    assert.deepEqual(leafHash(new Uint8Array(0)), hex('6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d'));
    assert.deepEqual(leafHash(Buffer.from('L123456')), hex('395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56'));
    assert.deepEqual(nodeHash(Buffer.from('N123'), Buffer.from('N456')), hex('aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb'));
    const a = sha256('a');
    const b = sha256('b');
    assert.notDeepEqual(nodeHash(a, b), nodeHash(b, a), 'node hash depends on order');
    assert.notDeepEqual(leafHash(a), sha256(a), 'leaf hash is prefixed');
  });

  it('1-, 2- and 3-leaf roots computed by hand', () => {
    const [e0, e1, e2] = entriesOf(3);
    const l0 = sha256(Buffer.concat([Buffer.from([0]), e0!]));
    const l1 = sha256(Buffer.concat([Buffer.from([0]), e1!]));
    const l2 = sha256(Buffer.concat([Buffer.from([0]), e2!]));
    assert.deepEqual(leafHash(e0!), l0);

    const t1 = new MerkleTree([e0!]);
    assert.deepEqual(t1.root, l0);
    assert.deepEqual(t1.leaf(0), l0);
    assert.deepEqual(t1.inclusionProof(0), []);

    const n01 = sha256(Buffer.concat([Buffer.from([1]), l0, l1]));
    assert.deepEqual(nodeHash(l0, l1), n01);
    const t2 = new MerkleTree([e0!, e1!]);
    assert.deepEqual(t2.root, n01);
    assert.deepEqual(t2.inclusionProof(0), [l1]);
    assert.deepEqual(t2.inclusionProof(1), [l0]);

    // n = 3 splits at k = 2: MTH = node(node(l0, l1), l2), l2 carried up unpaired.
    const t3 = new MerkleTree([e0!, e1!, e2!]);
    assert.deepEqual(t3.root, nodeHash(nodeHash(l0, l1), l2));
    assert.deepEqual(t3.inclusionProof(0), [l1, l2]);
    assert.deepEqual(t3.inclusionProof(1), [l0, l2]);
    assert.deepEqual(t3.inclusionProof(2), [n01]);
  });
});

describe('published RFC 6962/9162 test vectors (transparency-dev/merkle proof/verify_test.go)', () => {
  const leaves = ['', '00', '10', '2021', '3031', '40414243', '5051525354555657', '606162636465666768696a6b6c6d6e6f'].map(hex);
  const roots = [
    '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
    'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125',
    'aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77',
    'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
    '4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4',
    '76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef',
    'ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c',
    '5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328',
  ].map(hex);
  // [leafIndex (0-based), treeSize, proof]
  const proofs: [number, number, string[]][] = [
    [0, 1, []],
    [0, 8, [
      '96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7',
      '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e',
      '6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4',
    ]],
    [5, 8, [
      'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b',
      'ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0',
      'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
    ]],
    [2, 3, ['fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125']],
    [1, 5, [
      '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
      '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e',
      'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b',
    ]],
  ];

  it('the reference MTH (built on leafHash/nodeHash semantics) reproduces the published roots for sizes 1..8', () => {
    for (let n = 1; n <= 8; n++) assert.deepEqual(refMTH(leaves.slice(0, n)), roots[n - 1], `size ${n}`);
    assert.deepEqual(leafHash(leaves[0]!), roots[0]);
    assert.deepEqual(nodeHash(leafHash(leaves[0]!), leafHash(leaves[1]!)), roots[1]);
    assert.deepEqual(nodeHash(roots[1]!, leafHash(leaves[2]!)), roots[2]);
  });

  it('the reference PATH reproduces the published proofs, and the verifier accepts them', () => {
    for (const [m, n, p] of proofs) {
      const proof = p.map(hex);
      assert.deepEqual(refPATH(m, leaves.slice(0, n)), proof, `PATH(${m}, D[${n}])`);
      const lh = leafHash(leaves[m]!);
      assert.deepEqual(rootFromLeafHashInclusionProof(lh, m, n, proof), roots[n - 1], `root from proof ${m}/${n}`);
      if (proof.length > 0) {
        assert.notDeepEqual(rootFromLeafHashInclusionProof(lh, m, n, [flipBit(proof[0]!, 3), ...proof.slice(1)]), roots[n - 1]);
        assert.equal(rootFromLeafHashInclusionProof(lh, m, n, proof.slice(0, -1)), undefined);
      }
      assert.equal(rootFromLeafHashInclusionProof(lh, m, n, [...proof, roots[n - 1]!]), undefined);
    }
  });
});

describe('MerkleTree against the recursive reference', () => {
  const MAX = 70;

  it('root, leaves and every PATH(m, D[n]) equal the reference for n = 1..70', () => {
    for (let n = 1; n <= MAX; n++) {
      const entries = entriesOf(n);
      const tree = new MerkleTree(entries);
      assert.equal(tree.size, n);
      assert.deepEqual(tree.root, refMTH(entries), `root n=${n}`);
      for (let m = 0; m < n; m++) {
        assert.deepEqual(tree.leaf(m), leafHash(entries[m]!), `leaf n=${n} m=${m}`);
        assert.deepEqual(tree.inclusionProof(m), refPATH(m, entries), `PATH n=${n} m=${m}`);
      }
    }
  });

  it('every proof verifies and rootFromInclusionProof returns the root, for n = 1..70', () => {
    for (let n = 1; n <= MAX; n++) {
      const entries = entriesOf(n);
      const tree = new MerkleTree(entries);
      const root = tree.root;
      for (let m = 0; m < n; m++) {
        const proof = tree.inclusionProof(m);
        assert.equal(verifyInclusion(entries[m]!, m, n, proof, root), true, `n=${n} m=${m}`);
        assert.deepEqual(rootFromInclusionProof(entries[m]!, m, n, proof), root);
        assert.deepEqual(rootFromLeafHashInclusionProof(tree.leaf(m), m, n, proof), root);
      }
    }
  });

  it('rejects a flipped bit in the entry, in any proof element, or in the root', () => {
    for (let n = 1; n <= MAX; n++) {
      const entries = entriesOf(n);
      const tree = new MerkleTree(entries);
      const root = tree.root;
      for (let m = 0; m < n; m++) {
        const entry = entries[m]!;
        const proof = tree.inclusionProof(m);
        for (const bit of [0, 7, 100, 255]) {
          assert.equal(verifyInclusion(flipBit(entry, bit), m, n, proof, root), false, `entry bit ${bit} n=${n} m=${m}`);
          assert.equal(verifyInclusion(entry, m, n, proof, flipBit(root, bit)), false, `root bit ${bit} n=${n} m=${m}`);
        }
        for (let i = 0; i < proof.length; i++) {
          const bad = proof.slice();
          bad[i] = flipBit(proof[i]!, (m * 31 + i * 7) % 256);
          assert.equal(verifyInclusion(entry, m, n, bad, root), false, `proof[${i}] n=${n} m=${m}`);
        }
        // Another entry of the same tree at this index.
        if (n > 1) assert.equal(verifyInclusion(entries[(m + 1) % n]!, m, n, proof, root), false);
      }
    }
  });

  it('rejects index ± 1 and a proof one element too long or too short', () => {
    for (let n = 1; n <= MAX; n++) {
      const entries = entriesOf(n);
      const tree = new MerkleTree(entries);
      const root = tree.root;
      for (let m = 0; m < n; m++) {
        const entry = entries[m]!;
        const proof = tree.inclusionProof(m);
        assert.equal(verifyInclusion(entry, m - 1, n, proof, root), false, `index-1 n=${n} m=${m}`);
        assert.equal(verifyInclusion(entry, m + 1, n, proof, root), false, `index+1 n=${n} m=${m}`);
        for (const extra of [root, sha256('x'), proof[0] ?? tree.leaf(m)]) {
          assert.equal(verifyInclusion(entry, m, n, [...proof, extra], root), false, `appended n=${n} m=${m}`);
          assert.equal(verifyInclusion(entry, m, n, [extra, ...proof], root), false, `prepended n=${n} m=${m}`);
          assert.equal(rootFromInclusionProof(entry, m, n, [...proof, extra]), undefined);
        }
        if (proof.length > 0) {
          assert.equal(verifyInclusion(entry, m, n, proof.slice(0, -1), root), false, `dropped last n=${n} m=${m}`);
          assert.equal(verifyInclusion(entry, m, n, proof.slice(1), root), false, `dropped first n=${n} m=${m}`);
          assert.equal(rootFromInclusionProof(entry, m, n, proof.slice(0, -1)), undefined);
        }
      }
    }
  });

  it('treeSize ± 1 is rejected unless PATH(m, D[n±1]) has exactly the same shape (the proof does not bind the size)', () => {
    // RFC 9162 2.1.3.2 only checks that the proof's shape fits (index, size): where the left/right
    // sequence of PATH(m, D[n']) is identical to PATH(m, D[n]), the same hashes recompute the same
    // root. The tree size must therefore be anchored together with the root (as in a signed tree head).
    let rejected = 0;
    let sameShape = 0;
    for (let n = 1; n <= MAX; n++) {
      const entries = entriesOf(n);
      const tree = new MerkleTree(entries);
      const root = tree.root;
      for (let m = 0; m < n; m++) {
        const proof = tree.inclusionProof(m);
        for (const size of [n - 1, n + 1]) {
          const shapesEqual = m < size && JSON.stringify(refSides(m, size)) === JSON.stringify(refSides(m, n));
          const ok = verifyInclusion(entries[m]!, m, size, proof, root);
          assert.equal(ok, shapesEqual, `n=${n} m=${m} size=${size}`);
          if (ok) sameShape++;
          else rejected++;
        }
      }
    }
    // Both cases occur; the same-shape case is in fact the common one (only leaves near the right
    // edge change shape), so a verifier must never trust a treeSize that is not anchored with the root.
    assert.ok(rejected > 0 && sameShape > 0, `rejected ${rejected}, same-shape ${sameShape}`);
    // Concrete same-shape case: PATH(0, D[5]) and PATH(0, D[6]) both take three right siblings.
    const e5 = entriesOf(5);
    const t5 = new MerkleTree(e5);
    assert.equal(verifyInclusion(e5[0]!, 0, 6, t5.inclusionProof(0), t5.root), true);
    // Concrete different-shape case: in D[4] leaf 3 is a left-left path, in D[5] leaf 3 needs 3 elements.
    const e4 = entriesOf(4);
    const t4 = new MerkleTree(e4);
    assert.equal(verifyInclusion(e4[3]!, 3, 5, t4.inclusionProof(3), t4.root), false);
    assert.equal(verifyInclusion(e4[3]!, 3, 3, t4.inclusionProof(3), t4.root), false);
  });
});

describe('second preimages', () => {
  it('an interior node presented as a leaf entry does not verify', () => {
    const entries = entriesOf(4);
    const tree = new MerkleTree(entries);
    const root = tree.root;
    const n01 = nodeHash(tree.leaf(0), tree.leaf(1));
    const n23 = nodeHash(tree.leaf(2), tree.leaf(3));
    assert.deepEqual(nodeHash(n01, n23), root);
    // Without the leaf prefix the forgery would succeed: n01 as "leaf hash" of a 2-leaf tree.
    assert.deepEqual(rootFromLeafHashInclusionProof(n01, 0, 2, [n23]), root);
    // As an entry, n01 is hashed with 0x00 first, so it cannot stand in for an interior node.
    assert.equal(verifyInclusion(n01, 0, 2, [n23], root), false);
    assert.equal(verifyInclusion(n23, 1, 2, [n01], root), false);
    assert.notDeepEqual(new MerkleTree([n01, n23]).root, root);
    // The 64-byte concatenation of two leaf hashes is not an entry, and its leaf hash is not the node.
    const concat = Buffer.concat([tree.leaf(0), tree.leaf(1)]);
    assert.notDeepEqual(leafHash(concat), n01);
    assert.equal(verifyInclusion(concat, 0, 2, [n23], root), false);
    assert.throws(() => new MerkleTree([concat]), RangeError);
  });
});

describe('large batches', () => {
  it('a 10,000-entry tree builds and proves every index', () => {
    const n = 10_000;
    const entries = entriesOf(n, 'big');
    const tree = new MerkleTree(entries);
    const root = tree.root;
    assert.deepEqual(root, refMTH(entries));
    const depth = Math.ceil(Math.log2(n));
    for (let m = 0; m < n; m++) {
      const proof = tree.inclusionProof(m);
      assert.ok(proof.length <= depth, `proof length ${proof.length} at ${m}`);
      if (!verifyInclusion(entries[m]!, m, n, proof, root)) assert.fail(`index ${m} does not verify`);
    }
    // Spot-check proofs against the (slow) reference, including the unbalanced right edge.
    for (const m of [0, 1, 4095, 4096, 8191, 8192, 9215, 9216, 9727, 9728, 9983, 9984, 9998, 9999]) {
      assert.deepEqual(tree.inclusionProof(m), refPATH(m, entries), `PATH at ${m}`);
    }
    assert.equal(verifyInclusion(entries[0]!, 1, n, tree.inclusionProof(0), root), false);
  });
});

describe('invalid input', () => {
  it('the constructor rejects entries that are not 32 bytes', () => {
    const good = entriesOf(3);
    assert.throws(() => new MerkleTree([good[0]!, new Uint8Array(31), good[2]!]), RangeError);
    assert.throws(() => new MerkleTree([new Uint8Array(33)]), RangeError);
    assert.throws(() => new MerkleTree([new Uint8Array(0)]), RangeError);
    assert.throws(() => new MerkleTree(['x'.repeat(32) as unknown as Uint8Array]), TypeError);
  });

  it('leaf() and inclusionProof() throw RangeError outside [0, n)', () => {
    const tree = new MerkleTree(entriesOf(5));
    for (const bad of [-1, 5, 6, 1.5, Number.NaN, Infinity]) {
      assert.throws(() => tree.inclusionProof(bad), RangeError, `inclusionProof(${bad})`);
      assert.throws(() => tree.leaf(bad), RangeError, `leaf(${bad})`);
    }
    assert.throws(() => new MerkleTree([]).inclusionProof(0), RangeError);
  });

  it('verifiers reject malformed arguments instead of throwing', () => {
    const entries = entriesOf(6);
    const tree = new MerkleTree(entries);
    const root = tree.root;
    const proof = tree.inclusionProof(2);
    assert.equal(verifyInclusion(entries[2]!, 2, 6, proof, root), true);
    assert.equal(verifyInclusion(entries[2]!.subarray(0, 31), 2, 6, proof, root), false, '31-byte entry');
    assert.equal(verifyInclusion(entries[2]!, 2, 6, proof, root.subarray(0, 31)), false, '31-byte root');
    assert.equal(verifyInclusion(entries[2]!, 2, 6, [proof[0]!.subarray(0, 31), ...proof.slice(1)], root), false);
    assert.equal(verifyInclusion(entries[2]!, 6, 6, proof, root), false, 'index = size');
    assert.equal(verifyInclusion(entries[2]!, 2, 0, proof, root), false, 'size 0');
    assert.equal(verifyInclusion(entries[2]!, 2.5, 6, proof, root), false, 'fractional index');
    assert.equal(verifyInclusion(entries[2]!, 2, Number.NaN, proof, root), false, 'NaN size');
    assert.equal(rootFromInclusionProof(entries[2]!, -1, 6, proof), undefined);
    assert.equal(rootFromInclusionProof(entries[2]!, 0, 0, []), undefined, 'no inclusion in the empty tree');
  });

  it('returned hashes are copies: mutating them or the input entries does not change the tree', () => {
    const entries = entriesOf(7);
    const tree = new MerkleTree(entries);
    const root = tree.root;
    const proof = tree.inclusionProof(3);
    tree.root.fill(0);
    tree.inclusionProof(3)[0]!.fill(0);
    tree.leaf(2).fill(0);
    entries[3]!.fill(0);
    assert.deepEqual(tree.root, root);
    assert.deepEqual(tree.inclusionProof(3), proof);
    assert.equal(verifyInclusion(sha256('entry-3'), 3, 7, tree.inclusionProof(3), tree.root), true);
  });
});
