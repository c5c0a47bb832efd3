import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  HASH_BYTES,
  MerkleTree,
  consistencyProof,
  emptyTreeRoot,
  hashChildren,
  hashLeaf,
  inclusionProof,
  merkleRoot,
  verifyConsistency,
  verifyInclusion,
} from '../../src/ledger/merkle.ts';

const fromHex = (hex: string): Uint8Array => Uint8Array.from(Buffer.from(hex, 'hex'));
const toHex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');
const hexList = (hashes: readonly Uint8Array[]): string[] => hashes.map(toHex);

// ---------------------------------------------------------------------------------------------
// Reference: RFC 9162 §2.1 definitions written out literally, with node:crypto directly, so the
// module is checked against an independent reading of the RFC and not against itself.
// ---------------------------------------------------------------------------------------------

const sha256 = (...parts: Uint8Array[]): Uint8Array => {
  const digest = createHash('sha256');
  for (const part of parts) digest.update(part);
  return digest.digest();
};
const referenceLeafHash = (data: Uint8Array): Uint8Array => sha256(Uint8Array.of(0), data);
const referenceNodeHash = (left: Uint8Array, right: Uint8Array): Uint8Array => sha256(Uint8Array.of(1), left, right);

/** k: the largest power of two smaller than n (n > 1). */
function split(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

/** MTH(D[n]) over leaf hashes. */
function referenceRoot(leafHashes: readonly Uint8Array[]): Uint8Array {
  const n = leafHashes.length;
  if (n === 0) return sha256();
  if (n === 1) return leafHashes[0];
  const k = split(n);
  return referenceNodeHash(referenceRoot(leafHashes.slice(0, k)), referenceRoot(leafHashes.slice(k)));
}

/** PATH(m, D[n]). */
function referencePath(m: number, leafHashes: readonly Uint8Array[]): Uint8Array[] {
  const n = leafHashes.length;
  if (n === 1) return [];
  const k = split(n);
  return m < k
    ? [...referencePath(m, leafHashes.slice(0, k)), referenceRoot(leafHashes.slice(k))]
    : [...referencePath(m - k, leafHashes.slice(k)), referenceRoot(leafHashes.slice(0, k))];
}

/** SUBPROOF(m, D[n], b); PROOF(m, D[n]) is SUBPROOF(m, D[n], true). */
function referenceSubproof(m: number, leafHashes: readonly Uint8Array[], b: boolean): Uint8Array[] {
  const n = leafHashes.length;
  if (m === n) return b ? [] : [referenceRoot(leafHashes)];
  const k = split(n);
  return m <= k
    ? [...referenceSubproof(m, leafHashes.slice(0, k), b), referenceRoot(leafHashes.slice(k))]
    : [...referenceSubproof(m - k, leafHashes.slice(k), false), referenceRoot(leafHashes.slice(0, k))];
}

/**
 * The shape of PATH(m, D[n]): for each proof hash, whether it is the right (R) or left (L) sibling.
 * A verifier's computation depends only on this shape, so a proof checks against any (index, size)
 * of the same shape: tree sizes and indices are bound by the signed header, not by the proof.
 */
function inclusionShape(m: number, n: number): string {
  if (n === 1) return '';
  const k = split(n);
  return m < k ? `${inclusionShape(m, k)}R` : `${inclusionShape(m - k, n - k)}L`;
}

/** The shape of SUBPROOF(m, D[n], b): O = old root (not sent), S = first hash sent, then R/L siblings. */
function consistencyShape(m: number, n: number, b = true): string {
  if (m === n) return b ? 'O' : 'S';
  const k = split(n);
  return m <= k ? `${consistencyShape(m, k, b)}R` : `${consistencyShape(m - k, n - k, false)}L`;
}

const flipBit = (bytes: Uint8Array, bit: number): Uint8Array => {
  const copy = Uint8Array.from(bytes);
  copy[bit >> 3] ^= 0x80 >> (bit & 7);
  return copy;
};
/** Bits to flip in a hash: the first one, and one that moves with `salt` across the 256. */
const bitsToFlip = (salt: number): number[] => [0, (salt * 37 + 11) % (8 * HASH_BYTES)];
/** Bits to flip in a size or index: every bit that can matter below 128, and a high one. */
const NUMBER_BITS = [0, 1, 2, 3, 4, 5, 6, 52];
/** Sizes and indices here are below 128, so bit 52 is clear and flipping it adds 2^52. */
const flipNumberBit = (n: number, bit: number): number => (bit < 31 ? n ^ (1 << bit) : n + 2 ** bit);
const replaceAt = <T>(items: readonly T[], at: number, item: T): T[] =>
  items.map((current, position) => (position === at ? item : current));

/** Distinct leaf data for property tests. */
const testLeaves = (count: number): Uint8Array[] =>
  Array.from({ length: count }, (_, n) => new TextEncoder().encode(`leaf ${n}`));

// ---------------------------------------------------------------------------------------------
// Published test vectors.
//
// Leaves, roots and complete-subtree hashes: google/trillian merkle/testonly/constants.go
// (LeafInputs, RootHashes, NodeHashes), the same data as transparency-dev/merkle
// proof/verify_test.go (leaves, roots). Inclusion and consistency proofs: transparency-dev/merkle
// proof/verify_test.go (inclusionProofs, whose leaf numbers are 1-based, and consistencyProofs).
// Proof shapes as node names: transparency-dev/merkle proof/proof_test.go (TestInclusion,
// TestConsistency), resolved here to hashes with NodeHashes.
// ---------------------------------------------------------------------------------------------

const VECTOR_LEAVES = [
  '',
  '00',
  '10',
  '2021',
  '3031',
  '40414243',
  '5051525354555657',
  '606162636465666768696a6b6c6d6e6f',
].map(fromHex);

/** Indexed by tree size. */
const VECTOR_ROOTS = [
  'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
  '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
  'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125',
  'aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77',
  'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
  '4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4',
  '76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef',
  'ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c',
  '5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328',
];

/** NODE_HASHES[level][i]: the complete subtree over leaves [i·2^level, (i+1)·2^level). */
const NODE_HASHES = [
  [
    '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
    '96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7',
    '0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7',
    '07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7',
    'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b',
    '4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658',
    'b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f',
    '46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1',
  ],
  [
    'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125',
    '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e',
    '0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a',
    'ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0',
  ],
  [
    'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
    '6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4',
  ],
  ['5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328'],
];

/** The nodes of proof_test.go's tree picture: leaves a–f and j, level 1 g–i, level 2 k and l. */
const node = (level: number, index: number): string => NODE_HASHES[level][index];
const [A, B, C, D, E, F, J, LEAF_7] = NODE_HASHES[0];
const [G, H, I] = NODE_HASHES[1];
const K = node(2, 0);
/** l = hash(i, j): the right half of the 7-leaf tree, which is not a complete subtree. */
const L = toHex(referenceNodeHash(fromHex(I), fromHex(J)));

/** verify_test.go inclusionProofs, as (index, size) with a 0-based index. */
const INCLUSION_VECTORS: Array<{ index: number; size: number; proof: string[] }> = [
  { index: 0, size: 1, proof: [] },
  { index: 0, size: 8, proof: [node(0, 1), node(1, 1), node(2, 1)] },
  { index: 5, size: 8, proof: [node(0, 4), node(1, 3), node(2, 0)] },
  { index: 2, size: 3, proof: [node(1, 0)] },
  { index: 1, size: 5, proof: [node(0, 0), node(1, 1), node(0, 4)] },
  // proof_test.go TestInclusion
  { index: 0, size: 2, proof: [B] },
  { index: 1, size: 2, proof: [A] },
  { index: 1, size: 3, proof: [A, C] },
  { index: 0, size: 7, proof: [B, H, L] },
  { index: 3, size: 7, proof: [C, G, L] },
  { index: 4, size: 7, proof: [F, J, K] },
  { index: 5, size: 7, proof: [E, J, K] },
  { index: 6, size: 7, proof: [I, K] },
  { index: 2, size: 4, proof: [D, G] },
  { index: 3, size: 5, proof: [C, G, E] },
  { index: 3, size: 6, proof: [C, G, I] },
  { index: 4, size: 6, proof: [F, K] },
];

/** verify_test.go consistencyProofs, then proof_test.go TestConsistency. */
const CONSISTENCY_VECTORS: Array<{ oldSize: number; newSize: number; proof: string[] }> = [
  { oldSize: 1, newSize: 1, proof: [] },
  { oldSize: 1, newSize: 8, proof: [node(0, 1), node(1, 1), node(2, 1)] },
  { oldSize: 6, newSize: 8, proof: [node(1, 2), node(1, 3), node(2, 0)] },
  { oldSize: 2, newSize: 5, proof: [node(1, 1), node(0, 4)] },
  { oldSize: 6, newSize: 7, proof: [node(1, 2), node(0, 6), node(2, 0)] },
  // proof_test.go TestConsistency
  { oldSize: 1, newSize: 2, proof: [B] },
  { oldSize: 1, newSize: 4, proof: [B, H] },
  { oldSize: 1, newSize: 6, proof: [B, H, I] },
  { oldSize: 2, newSize: 3, proof: [C] },
  { oldSize: 2, newSize: 8, proof: [H, node(2, 1)] },
  { oldSize: 3, newSize: 7, proof: [C, D, G, L] },
  { oldSize: 4, newSize: 7, proof: [L] },
  { oldSize: 5, newSize: 7, proof: [E, F, J, K] },
  { oldSize: 7, newSize: 8, proof: [J, LEAF_7, I, K] },
  { oldSize: 2, newSize: 4, proof: [H] },
  { oldSize: 3, newSize: 5, proof: [C, D, G, E] },
  { oldSize: 3, newSize: 6, proof: [C, D, G, I] },
  { oldSize: 4, newSize: 6, proof: [I] },
  { oldSize: 1, newSize: 7, proof: [B, H, L] },
];

/** verify_test.go sha256SomeHash: a well-formed hash that is no node of the vector tree. */
const SOME_HASH = fromHex('abacaba000000000000000000000000000000000000000000060061e00123456');

describe('merkle: published vectors (RFC 6962/9162 test data of Trillian and transparency-dev/merkle)', () => {
  it('hashes leaves and nodes with the 0x00 / 0x01 prefixes, and the empty tree as SHA-256("")', () => {
    assert.deepEqual(hexList(VECTOR_LEAVES.map(hashLeaf)), NODE_HASHES[0]);
    assert.equal(toHex(hashChildren(fromHex(A), fromHex(B))), G);
    assert.equal(toHex(emptyTreeRoot()), VECTOR_ROOTS[0]);
    assert.equal(toHex(emptyTreeRoot()), toHex(sha256()));
  });

  it('computes the published root for every tree size 0..8, from data, from leaf hashes and incrementally', () => {
    const incremental = new MerkleTree();
    for (let size = 0; size <= 8; size++) {
      if (size > 0) assert.equal(incremental.append(VECTOR_LEAVES[size - 1]), size - 1);
      const leaves = VECTOR_LEAVES.slice(0, size);
      assert.equal(toHex(merkleRoot(leaves)), VECTOR_ROOTS[size], `size ${size}`);
      assert.equal(toHex(MerkleTree.fromLeafHashes(leaves.map(hashLeaf)).root()), VECTOR_ROOTS[size]);
      assert.equal(incremental.size, size);
      assert.equal(toHex(incremental.root()), VECTOR_ROOTS[size]);
    }
  });

  it('generates and verifies the published inclusion proofs', () => {
    for (const { index, size, proof } of INCLUSION_VECTORS) {
      const label = `leaf ${index} of ${size}`;
      const leaves = VECTOR_LEAVES.slice(0, size);
      assert.deepEqual(hexList(inclusionProof(index, leaves)), proof, label);
      const root = fromHex(VECTOR_ROOTS[size]);
      const leafHash = hashLeaf(VECTOR_LEAVES[index]);
      assert.equal(verifyInclusion(leafHash, index, size, proof.map(fromHex), root), true, label);
    }
    // A one-leaf tree: the root is the leaf hash and the proof is empty.
    assert.equal(verifyInclusion(fromHex(A), 0, 1, [], fromHex(A)), true);
  });

  it('rejects the corrupted inclusion proofs of verify_test.go (corruptInclusionProof)', () => {
    for (const { index, size, proof: hexProof } of INCLUSION_VECTORS.filter((v) => v.proof.length > 0)) {
      const proof = hexProof.map(fromHex);
      const root = fromHex(VECTOR_ROOTS[size]);
      const leafHash = hashLeaf(VECTOR_LEAVES[index]);
      const probes: Array<[string, Uint8Array, number, number, Uint8Array[], Uint8Array]> = [
        ['index - 1', leafHash, index - 1, size, proof, root],
        ['index + 1', leafHash, index + 1, size, proof, root],
        ['index ^ 2', leafHash, index ^ 2, size, proof, root],
        ['size * 2', leafHash, index, size * 2, proof, root],
        ['size / 2', leafHash, index, Math.floor(size / 2), proof, root],
        ['wrong leaf', new TextEncoder().encode('WrongLeaf'), index, size, proof, root],
        ['empty root', leafHash, index, size, proof, emptyTreeRoot()],
        ['random root', leafHash, index, size, proof, SOME_HASH],
        ['trailing garbage', leafHash, index, size, [...proof, new Uint8Array(0)], root],
        ['trailing root', leafHash, index, size, [...proof, root], root],
        ['preceding garbage', leafHash, index, size, [new Uint8Array(0), ...proof], root],
        ['preceding root', leafHash, index, size, [root, ...proof], root],
        ['removed component', leafHash, index, size, proof.slice(0, -1), root],
        ['inserted component', leafHash, index, size, [proof[0], SOME_HASH, ...proof.slice(1)], root],
        ...proof.map((_, at): [string, Uint8Array, number, number, Uint8Array[], Uint8Array] => [
          `modified proof[${at}]`, leafHash, index, size, replaceAt(proof, at, flipBit(proof[at], 4)), root,
        ]),
      ];
      for (const [desc, probeLeaf, probeIndex, probeSize, probeProof, probeRoot] of probes) {
        assert.equal(
          verifyInclusion(probeLeaf, probeIndex, probeSize, probeProof, probeRoot),
          false,
          `leaf ${index} of ${size}: ${desc}`,
        );
      }
    }
  });

  it('generates and verifies the published consistency proofs', () => {
    for (const { oldSize, newSize, proof } of CONSISTENCY_VECTORS) {
      const label = `${oldSize} → ${newSize}`;
      assert.deepEqual(hexList(consistencyProof(oldSize, VECTOR_LEAVES.slice(0, newSize))), proof, label);
      const oldRoot = fromHex(VECTOR_ROOTS[oldSize]);
      const newRoot = fromHex(VECTOR_ROOTS[newSize]);
      assert.equal(verifyConsistency(oldSize, newSize, oldRoot, newRoot, proof.map(fromHex)), true, label);
    }
  });

  it('rejects the corrupted consistency proofs of verify_test.go (corruptConsistencyProof)', () => {
    for (const { oldSize, newSize, proof: hexProof } of CONSISTENCY_VECTORS.filter((v) => v.proof.length > 0)) {
      const proof = hexProof.map(fromHex);
      const oldRoot = fromHex(VECTOR_ROOTS[oldSize]);
      const newRoot = fromHex(VECTOR_ROOTS[newSize]);
      const wrongRoot = new TextEncoder().encode('WrongRoot');
      const probes: Array<[string, number, number, Uint8Array, Uint8Array, Uint8Array[]]> = [
        ['oldSize - 1', oldSize - 1, newSize, oldRoot, newRoot, proof],
        ['oldSize + 1', oldSize + 1, newSize, oldRoot, newRoot, proof],
        ['oldSize ^ 2', oldSize ^ 2, newSize, oldRoot, newRoot, proof],
        ['newSize * 2', oldSize, newSize * 2, oldRoot, newRoot, proof],
        ['newSize / 2', oldSize, Math.floor(newSize / 2), oldRoot, newRoot, proof],
        ['wrong old root', oldSize, newSize, wrongRoot, newRoot, proof],
        ['wrong new root', oldSize, newSize, oldRoot, wrongRoot, proof],
        ['swapped roots', oldSize, newSize, newRoot, oldRoot, proof],
        ['empty proof', oldSize, newSize, oldRoot, newRoot, []],
        ['trailing garbage', oldSize, newSize, oldRoot, newRoot, [...proof, new Uint8Array(0)]],
        ['trailing old root', oldSize, newSize, oldRoot, newRoot, [...proof, oldRoot]],
        ['trailing new root', oldSize, newSize, oldRoot, newRoot, [...proof, newRoot]],
        ['preceding garbage', oldSize, newSize, oldRoot, newRoot, [new Uint8Array(0), ...proof]],
        ['preceding old root', oldSize, newSize, oldRoot, newRoot, [oldRoot, ...proof]],
        ['preceding new root', oldSize, newSize, oldRoot, newRoot, [newRoot, ...proof]],
        ['preceding proof[0]', oldSize, newSize, oldRoot, newRoot, [proof[0], ...proof]],
        ['truncated proof', oldSize, newSize, oldRoot, newRoot, proof.slice(0, -1)],
        ...proof.map((_, at): [string, number, number, Uint8Array, Uint8Array, Uint8Array[]] => [
          `modified proof[${at}]`, oldSize, newSize, oldRoot, newRoot, replaceAt(proof, at, flipBit(proof[at], 3)),
        ]),
      ];
      for (const [desc, probeOld, probeNew, probeOldRoot, probeNewRoot, probeProof] of probes) {
        assert.equal(
          verifyConsistency(probeOld, probeNew, probeOldRoot, probeNewRoot, probeProof),
          false,
          `${oldSize} → ${newSize}: ${desc}`,
        );
      }
    }
  });

  it('takes an empty consistency proof only for equal trees and from the empty tree', () => {
    const root8 = fromHex(VECTOR_ROOTS[8]);
    const root5 = fromHex(VECTOR_ROOTS[5]);
    const empty = emptyTreeRoot();
    assert.deepEqual(consistencyProof(0, VECTOR_LEAVES), []);
    assert.deepEqual(consistencyProof(8, VECTOR_LEAVES), []);
    assert.equal(verifyConsistency(0, 0, empty, empty, []), true);
    assert.equal(verifyConsistency(0, 8, empty, root8, []), true);
    assert.equal(verifyConsistency(8, 8, root8, root8, []), true);
    assert.equal(verifyConsistency(0, 8, root5, root8, []), false, 'an empty tree has the empty root');
    assert.equal(verifyConsistency(8, 8, root5, root8, []), false, 'equal sizes, different roots');
    assert.equal(verifyConsistency(8, 8, root8, root8, [SOME_HASH]), false, 'equal trees, non-empty proof');
    assert.equal(verifyConsistency(0, 8, empty, root8, [SOME_HASH]), false, 'from empty, non-empty proof');
    assert.equal(verifyConsistency(5, 8, root5, root8, []), false, 'RFC 9162 step 1: empty path fails');
    assert.equal(verifyConsistency(8, 5, root8, root5, []), false, 'the new tree is smaller');
  });
});

describe('merkle: properties for every tree size 1..64', () => {
  const MAX_SIZE = 64;
  const leafHashes = testLeaves(MAX_SIZE).map(referenceLeafHash);
  const roots = Array.from({ length: MAX_SIZE + 1 }, (_, size) => referenceRoot(leafHashes.slice(0, size)));
  const treesBySize = roots.map((_, size) => MerkleTree.fromLeafHashes(leafHashes.slice(0, size)));

  it('matches the RFC definitions (MTH, PATH, PROOF) for every size, index and old size', () => {
    const incremental = new MerkleTree();
    for (let size = 0; size <= MAX_SIZE; size++) {
      if (size > 0) incremental.appendLeafHash(leafHashes[size - 1]);
      const leaves = leafHashes.slice(0, size);
      assert.equal(toHex(incremental.root()), toHex(roots[size]), `root of ${size}`);
      assert.equal(toHex(treesBySize[size].root()), toHex(roots[size]));
      for (let index = 0; index < size; index++) {
        assert.deepEqual(hexList(treesBySize[size].inclusionProof(index)), hexList(referencePath(index, leaves)));
      }
      for (let oldSize = 1; oldSize <= size; oldSize++) {
        assert.deepEqual(
          hexList(treesBySize[size].consistencyProof(oldSize)),
          hexList(referenceSubproof(oldSize, leaves, true)),
          `${oldSize} → ${size}`,
        );
      }
    }
  });

  it('verifies every inclusion proof, and fails on any flipped bit in leaf, proof, root, index or size', () => {
    for (let size = 1; size <= MAX_SIZE; size++) {
      const root = roots[size];
      for (let index = 0; index < size; index++) {
        const label = `leaf ${index} of ${size}`;
        const leafHash = leafHashes[index];
        const proof = treesBySize[size].inclusionProof(index);
        assert.equal(verifyInclusion(leafHash, index, size, proof, root), true, label);

        for (const bit of bitsToFlip(size + index)) {
          assert.equal(verifyInclusion(flipBit(leafHash, bit), index, size, proof, root), false, `${label}: leaf`);
          assert.equal(verifyInclusion(leafHash, index, size, proof, flipBit(root, bit)), false, `${label}: root`);
          proof.forEach((element, at) => {
            const flipped = replaceAt(proof, at, flipBit(element, bit));
            assert.equal(verifyInclusion(leafHash, index, size, flipped, root), false, `${label}: proof[${at}]`);
          });
        }
        // A changed size still verifies exactly when it gives the same proof shape.
        for (const bit of NUMBER_BITS) {
          // Distinct leaves of one tree never share a shape.
          const otherIndex = flipNumberBit(index, bit);
          assert.equal(verifyInclusion(leafHash, otherIndex, size, proof, root), false, `${label}: index ${otherIndex}`);

          const otherSize = flipNumberBit(size, bit);
          const sameShape = index < otherSize && inclusionShape(index, otherSize) === inclusionShape(index, size);
          assert.equal(verifyInclusion(leafHash, index, otherSize, proof, root), sameShape, `${label}: size ${otherSize}`);
        }
        if (proof.length > 0) {
          assert.equal(verifyInclusion(leafHash, index, size, proof.slice(0, -1), root), false, `${label}: truncated`);
        }
        assert.equal(verifyInclusion(leafHash, index, size, [...proof, root], root), false, `${label}: extended`);
        assert.equal(verifyInclusion(leafHash, index, size, [root, ...proof], root), false, `${label}: prefixed`);
      }
    }
  });

  it('verifies every consistency proof, and fails on any flipped bit in a root, the proof or a size', () => {
    for (let newSize = 1; newSize <= MAX_SIZE; newSize++) {
      const newRoot = roots[newSize];
      for (let oldSize = 0; oldSize <= newSize; oldSize++) {
        const label = `${oldSize} → ${newSize}`;
        const oldRoot = roots[oldSize];
        const proof = treesBySize[newSize].consistencyProof(oldSize);
        assert.equal(verifyConsistency(oldSize, newSize, oldRoot, newRoot, proof), true, label);

        for (const bit of bitsToFlip(oldSize + newSize)) {
          assert.equal(verifyConsistency(oldSize, newSize, flipBit(oldRoot, bit), newRoot, proof), false, `${label}: old root`);
          // With equal sizes the roots are compared (the old-root flip covers it); any tree extends
          // the empty tree, so then the new root is not constrained at all.
          if (oldSize > 0 && oldSize < newSize) {
            assert.equal(verifyConsistency(oldSize, newSize, oldRoot, flipBit(newRoot, bit), proof), false, `${label}: new root`);
          }
          proof.forEach((element, at) => {
            const flipped = replaceAt(proof, at, flipBit(element, bit));
            assert.equal(verifyConsistency(oldSize, newSize, oldRoot, newRoot, flipped), false, `${label}: proof[${at}]`);
          });
        }
        // A changed size still verifies exactly when the proof has the same shape for it; an empty
        // proof only ever proves equal trees or the empty tree, which the shapes do not describe.
        if (oldSize > 0 && oldSize < newSize) {
          for (const bit of NUMBER_BITS) {
            const otherOld = flipNumberBit(oldSize, bit);
            const otherNew = flipNumberBit(newSize, bit);
            const shape = consistencyShape(oldSize, newSize);
            const oldShapeKept = otherOld > 0 && otherOld < newSize && consistencyShape(otherOld, newSize) === shape;
            const newShapeKept = oldSize < otherNew && consistencyShape(oldSize, otherNew) === shape;
            assert.equal(verifyConsistency(otherOld, newSize, oldRoot, newRoot, proof), oldShapeKept, `${label}: old size ${otherOld}`);
            assert.equal(verifyConsistency(oldSize, otherNew, oldRoot, newRoot, proof), newShapeKept, `${label}: new size ${otherNew}`);
          }
        }
        if (proof.length > 0) {
          assert.equal(verifyConsistency(oldSize, newSize, oldRoot, newRoot, proof.slice(0, -1)), false, `${label}: truncated`);
        }
        assert.equal(verifyConsistency(oldSize, newSize, oldRoot, newRoot, [...proof, newRoot]), false, `${label}: extended`);
        assert.equal(verifyConsistency(oldSize, newSize, oldRoot, newRoot, [oldRoot, ...proof]), false, `${label}: prefixed`);
      }
    }
  });
});

describe('merkle: block-sized trees', () => {
  it('builds the root of 10,000 leaves in well under a second and proves against it', () => {
    const leaves = testLeaves(10_000);
    const started = performance.now();
    const tree = MerkleTree.fromLeaves(leaves);
    const root = tree.root();
    const elapsed = performance.now() - started;
    // Tens of milliseconds here; the bound only catches an accidental O(n²) (minutes at this size).
    assert.ok(elapsed < 1000, `10,000 leaves took ${elapsed.toFixed(0)} ms`);
    assert.equal(toHex(root), toHex(referenceRoot(leaves.map(referenceLeafHash))));

    for (const index of [0, 1, 4095, 4096, 8191, 8192, 9998, 9999]) {
      const proof = tree.inclusionProof(index);
      assert.equal(verifyInclusion(hashLeaf(leaves[index]), index, 10_000, proof, root), true, `leaf ${index}`);
    }
    for (const oldSize of [1, 2, 3, 4096, 5000, 8192, 9999]) {
      const oldRoot = merkleRoot(leaves.slice(0, oldSize));
      const proof = tree.consistencyProof(oldSize);
      assert.equal(verifyConsistency(oldSize, 10_000, oldRoot, root, proof), true, `${oldSize} → 10000`);
    }
  });
});

describe('merkle: misuse', () => {
  const root = fromHex(VECTOR_ROOTS[8]);
  const leafHash = hashLeaf(VECTOR_LEAVES[0]);
  const proof = [node(0, 1), node(1, 1), node(2, 1)].map(fromHex);

  it('verifiers return false, never throw, on malformed input', () => {
    const badHashes: unknown[] = [undefined, null, 'a'.repeat(64), [], new Uint8Array(31), new Uint8Array(33), new ArrayBuffer(32)];
    const badNumbers: unknown[] = [undefined, null, '0', -1, 0.5, Number.NaN, Infinity, 2 ** 53, 1n];
    const sparseProof = [proof[0], , proof[2]]; // a hole, which Array.prototype.every skips
    const badProofs: unknown[] = [undefined, null, 'proof', {}, [null], [new Uint8Array(31)], [...proof, 'x'], { length: 3 }, new Array(3), sparseProof];
    const call = (args: unknown[]): boolean => (verifyInclusion as (...x: unknown[]) => boolean)(...args);
    const callConsistency = (args: unknown[]): boolean => (verifyConsistency as (...x: unknown[]) => boolean)(...args);
    const good = [leafHash, 0, 8, proof, root];
    assert.equal(call(good), true);
    for (const bad of badHashes) {
      assert.equal(call(replaceAt(good, 0, bad)), false);
      assert.equal(call(replaceAt(good, 4, bad)), false);
      assert.equal(callConsistency([1, 8, bad, root, proof]), false);
      assert.equal(callConsistency([8, 8, root, bad, []]), false);
    }
    for (const bad of badNumbers) {
      assert.equal(call(replaceAt(good, 1, bad)), false);
      assert.equal(call(replaceAt(good, 2, bad)), false);
      assert.equal(callConsistency([bad, 8, root, root, []]), false);
      assert.equal(callConsistency([8, bad, root, root, []]), false);
    }
    for (const bad of badProofs) {
      assert.equal(call(replaceAt(good, 3, bad)), false);
      assert.equal(callConsistency([1, 8, fromHex(VECTOR_ROOTS[1]), root, bad]), false);
    }
    assert.equal(verifyInclusion(leafHash, 8, 8, proof, root), false, 'index = size');
    assert.equal(verifyInclusion(leafHash, 0, 0, [], emptyTreeRoot()), false, 'empty tree');
    assert.equal(verifyInclusion(leafHash, 0, 2 ** 53 - 1, proof, root), false, 'largest safe size');
    const longProof = Array.from({ length: 100_000 }, () => root);
    assert.equal(verifyInclusion(leafHash, 0, 8, longProof, root), false, 'oversized proof');
    assert.equal(verifyConsistency(1, 8, fromHex(VECTOR_ROOTS[1]), root, longProof), false, 'oversized proof');
  });

  it('tree builders reject out-of-range indices and sizes and malformed leaf hashes', () => {
    const tree = MerkleTree.fromLeaves(VECTOR_LEAVES);
    for (const index of [-1, 8, 0.5, Number.NaN]) assert.throws(() => tree.inclusionProof(index), RangeError);
    for (const oldSize of [-1, 9, 1.5]) assert.throws(() => tree.consistencyProof(oldSize), RangeError);
    assert.throws(() => new MerkleTree().inclusionProof(0), RangeError);
    assert.throws(() => tree.appendLeafHash(new Uint8Array(31)), TypeError);
    assert.equal(tree.size, 8);
  });

  it('keeps its own copy of appended leaf hashes', () => {
    const reused = Uint8Array.from(hashLeaf(VECTOR_LEAVES[0]));
    const tree = new MerkleTree();
    tree.appendLeafHash(reused);
    reused.fill(0);
    assert.equal(toHex(tree.root()), VECTOR_ROOTS[1]);
  });
});
