/**
 * Merkle trees with RFC 9162 (Certificate Transparency v2) hashing over SHA-256: the data hash of a
 * ledger block, and the inclusion and consistency proofs a third party checks offline.
 *
 * - leaf hash = SHA-256(0x00 ‖ leaf data), node hash = SHA-256(0x01 ‖ left ‖ right) (RFC 9162 §2.1.1).
 *   The distinct prefixes keep a leaf from being passed off as an interior node.
 * - The hash of n > 1 leaves splits them at k, the largest power of two smaller than n: the left
 *   subtree holds the first k leaves. The hash of no leaves is SHA-256 of the empty string.
 * - Proofs are lists of 32-byte hashes, ordered from the leaf (or the old root) up to the root.
 *
 * Building a tree or a proof throws on misuse (a hash of the wrong length, an index out of range);
 * the two verify functions never throw and return false for any malformed input.
 * docs/proofs.md ("Merkle trees and proofs") states the rules for third parties.
 */
import { hash } from 'node:crypto';

/** Length in bytes of every hash in a tree or a proof. */
export const HASH_BYTES = 32;

const LEAF_PREFIX = 0x00;
const NODE_PREFIX = 0x01;

/**
 * Holds prefix ‖ data while a node or a small leaf is hashed. One-shot `hash` over a reused buffer
 * costs about a third of a `createHash` object or a `Buffer.concat` per hash, which dominates
 * building a tree. Safe to share: hashing is synchronous.
 */
const scratch = new Uint8Array(1 + 2 * HASH_BYTES);

function sha256WithPrefix(prefix: number, ...parts: Uint8Array[]): Uint8Array {
  const length = parts.reduce((total, part) => total + part.length, 1);
  // Larger inputs (leaves only) get their own buffer rather than a scratch that would stay that big.
  const input = length <= scratch.length ? scratch.subarray(0, length) : new Uint8Array(length);
  input[0] = prefix;
  let offset = 1;
  for (const part of parts) {
    input.set(part, offset);
    offset += part.length;
  }
  return hash('sha256', input, 'buffer');
}

/** The root of a tree with no leaves: SHA-256(""). */
export function emptyTreeRoot(): Uint8Array {
  return hash('sha256', new Uint8Array(0), 'buffer');
}

export function hashLeaf(leafData: Uint8Array): Uint8Array {
  return sha256WithPrefix(LEAF_PREFIX, leafData);
}

export function hashChildren(left: Uint8Array, right: Uint8Array): Uint8Array {
  return sha256WithPrefix(NODE_PREFIX, left, right);
}

/**
 * An append-only Merkle tree that keeps the hash of every complete subtree. Appending costs one leaf
 * hash plus one node hash on average; the root costs O(log n) hashes and a proof O(log² n), so one
 * tree serves every proof of a block.
 */
export class MerkleTree {
  /** levels[h][i] is the hash of the complete subtree over leaves [i·2^h, (i+1)·2^h). */
  private readonly levels: Uint8Array[][] = [[]];

  static fromLeaves(leaves: Iterable<Uint8Array>): MerkleTree {
    const tree = new MerkleTree();
    for (const leaf of leaves) tree.append(leaf);
    return tree;
  }

  static fromLeafHashes(leafHashes: Iterable<Uint8Array>): MerkleTree {
    const tree = new MerkleTree();
    for (const leafHash of leafHashes) tree.appendLeafHash(leafHash);
    return tree;
  }

  get size(): number {
    return this.levels[0].length;
  }

  /** Appends a leaf given its data; returns its index. */
  append(leafData: Uint8Array): number {
    return this.pushLeafHash(hashLeaf(leafData));
  }

  /** Appends a leaf given its leaf hash (`hashLeaf` of its data); returns its index. */
  appendLeafHash(leafHash: Uint8Array): number {
    if (!isHash(leafHash)) throw new TypeError(`a leaf hash must be a Uint8Array of ${HASH_BYTES} bytes`);
    // Copied so that a caller reusing its buffer cannot change the tree.
    return this.pushLeafHash(Uint8Array.from(leafHash));
  }

  root(): Uint8Array {
    return this.size === 0 ? emptyTreeRoot() : this.subtreeHash(0, this.size);
  }

  /** RFC 9162 §2.1.3.1 PATH(index, D[size]): the sibling hashes from the leaf up to the root. */
  inclusionProof(index: number): Uint8Array[] {
    if (!Number.isInteger(index) || index < 0 || index >= this.size) {
      throw new RangeError(`leaf index ${index} is not in a tree of ${this.size} leaves`);
    }
    return this.inclusionPath(index, 0, this.size);
  }

  /**
   * RFC 9162 §2.1.4.1 PROOF(oldSize, D[size]): proves that the tree of the first `oldSize` leaves is
   * a prefix of this one. Empty when oldSize is 0 or the current size (nothing to prove).
   */
  consistencyProof(oldSize: number): Uint8Array[] {
    if (!Number.isInteger(oldSize) || oldSize < 0 || oldSize > this.size) {
      throw new RangeError(`old size ${oldSize} is not between 0 and the tree size ${this.size}`);
    }
    return oldSize === 0 ? [] : this.consistencySubproof(oldSize, 0, this.size, true);
  }

  private pushLeafHash(leafHash: Uint8Array): number {
    const index = this.size;
    this.levels[0].push(leafHash);
    // The new leaf completes one subtree at each level whose length it makes even.
    for (let height = 0; this.levels[height].length % 2 === 0; height++) {
      const level = this.levels[height];
      const parent = hashChildren(level[level.length - 2], level[level.length - 1]);
      (this.levels[height + 1] ??= []).push(parent);
    }
    return index;
  }

  /**
   * The hash of leaves [start, end). Every subtree the RFC recursion visits starts at a multiple of
   * the power of two just at or above its size, so its left part is always a stored complete subtree.
   */
  private subtreeHash(start: number, end: number): Uint8Array {
    const size = end - start;
    if (isPowerOfTwo(size)) return this.levels[log2(size)][start / size];
    const split = largestPowerOfTwoBelow(size);
    return hashChildren(this.levels[log2(split)][start / split], this.subtreeHash(start + split, end));
  }

  private inclusionPath(index: number, start: number, end: number): Uint8Array[] {
    if (end - start === 1) return [];
    const middle = start + largestPowerOfTwoBelow(end - start);
    return index < middle
      ? [...this.inclusionPath(index, start, middle), this.subtreeHash(middle, end)]
      : [...this.inclusionPath(index, middle, end), this.subtreeHash(start, middle)];
  }

  /**
   * RFC 9162 SUBPROOF(oldEnd - start, D[start:end], b). `isOldRoot` (the RFC's b) says the subtree
   * [start, oldEnd) is the whole old tree, whose hash the verifier already has, so it is not sent.
   */
  private consistencySubproof(oldEnd: number, start: number, end: number, isOldRoot: boolean): Uint8Array[] {
    if (oldEnd === end) return isOldRoot ? [] : [this.subtreeHash(start, end)];
    const middle = start + largestPowerOfTwoBelow(end - start);
    return oldEnd <= middle
      ? [...this.consistencySubproof(oldEnd, start, middle, isOldRoot), this.subtreeHash(middle, end)]
      : [...this.consistencySubproof(oldEnd, middle, end, false), this.subtreeHash(start, middle)];
  }
}

/** The root of a tree over `leaves` (leaf data, hashed with `hashLeaf`). */
export function merkleRoot(leaves: Iterable<Uint8Array>): Uint8Array {
  return MerkleTree.fromLeaves(leaves).root();
}

/** The inclusion proof of leaf `index` in the tree over `leaves` (leaf data). */
export function inclusionProof(index: number, leaves: Iterable<Uint8Array>): Uint8Array[] {
  return MerkleTree.fromLeaves(leaves).inclusionProof(index);
}

/** The consistency proof from the first `oldSize` of `leaves` (leaf data) to all of them. */
export function consistencyProof(oldSize: number, leaves: Iterable<Uint8Array>): Uint8Array[] {
  return MerkleTree.fromLeaves(leaves).consistencyProof(oldSize);
}

/**
 * RFC 9162 §2.1.3.2: true when `proof` shows that the leaf with hash `leafHash` is leaf number `index`
 * of the tree of `treeSize` leaves whose root is `root`. The proof does not bind the tree size on its
 * own (leaf 0 has the same proof shape in trees of 5 to 8 leaves), so `treeSize` must come from the
 * same signed header as `root`. Never throws.
 */
export function verifyInclusion(
  leafHash: Uint8Array,
  index: number,
  treeSize: number,
  proof: readonly Uint8Array[],
  root: Uint8Array,
): boolean {
  if (!isHash(leafHash) || !isHash(root) || !isProof(proof)) return false;
  if (!isTreeSize(treeSize) || !isTreeSize(index) || index >= treeSize) return false;
  // node and lastNode are the RFC's fn and sn: the positions of the current node and of the tree's
  // last node on the current level.
  let node = index;
  let lastNode = treeSize - 1;
  let computedRoot = leafHash;
  for (const sibling of proof) {
    if (lastNode === 0) return false; // more hashes than levels
    if (isOdd(node) || node === lastNode) {
      computedRoot = hashChildren(sibling, computedRoot);
      // A last node without a right sibling is carried up unchanged: skip those levels.
      while (!isOdd(node) && node !== 0) [node, lastNode] = [half(node), half(lastNode)];
    } else {
      computedRoot = hashChildren(computedRoot, sibling);
    }
    [node, lastNode] = [half(node), half(lastNode)];
  }
  return lastNode === 0 && bytesEqual(computedRoot, root);
}

/**
 * RFC 9162 §2.1.4.2: true when `proof` shows that the tree of `newSize` leaves with root `newRoot`
 * extends the tree of `oldSize` leaves with root `oldRoot` (same first `oldSize` leaves). Two cases
 * the RFC leaves open take an empty proof: equal sizes with equal roots, and an old tree of size 0
 * whose root is `emptyTreeRoot()`. As for inclusion, both sizes must come from signed headers.
 * Never throws.
 */
export function verifyConsistency(
  oldSize: number,
  newSize: number,
  oldRoot: Uint8Array,
  newRoot: Uint8Array,
  proof: readonly Uint8Array[],
): boolean {
  if (!isHash(oldRoot) || !isHash(newRoot) || !isProof(proof)) return false;
  if (!isTreeSize(oldSize) || !isTreeSize(newSize) || oldSize > newSize) return false;
  if (oldSize === newSize) return proof.length === 0 && bytesEqual(oldRoot, newRoot);
  if (oldSize === 0) return proof.length === 0 && bytesEqual(oldRoot, emptyTreeRoot());
  if (proof.length === 0) return false;
  // An old tree whose size is a power of two is a complete subtree of the new one: its root is the
  // first hash of the path, and the RFC leaves it out of the proof.
  const path = isPowerOfTwo(oldSize) ? [oldRoot, ...proof] : proof;
  // node and lastNode are the RFC's fn and sn, as in verifyInclusion, starting from the old tree's
  // last leaf; levels where it is a right child are already summed up in path[0].
  let node = oldSize - 1;
  let lastNode = newSize - 1;
  while (isOdd(node)) [node, lastNode] = [half(node), half(lastNode)];
  let oldHash = path[0];
  let newHash = path[0];
  for (const sibling of path.slice(1)) {
    if (lastNode === 0) return false; // more hashes than levels
    if (isOdd(node) || node === lastNode) {
      oldHash = hashChildren(sibling, oldHash);
      newHash = hashChildren(sibling, newHash);
      while (!isOdd(node) && node !== 0) [node, lastNode] = [half(node), half(lastNode)];
    } else {
      // A right sibling holds only new leaves: it belongs to the new tree alone.
      newHash = hashChildren(newHash, sibling);
    }
    [node, lastNode] = [half(node), half(lastNode)];
  }
  return lastNode === 0 && bytesEqual(oldHash, oldRoot) && bytesEqual(newHash, newRoot);
}

function isHash(value: unknown): value is Uint8Array {
  return value instanceof Uint8Array && value.length === HASH_BYTES;
}

function isProof(value: unknown): value is readonly Uint8Array[] {
  if (!Array.isArray(value)) return false;
  // An index loop, not every(): every() skips the holes of a sparse array.
  for (let position = 0; position < value.length; position++) if (!isHash(value[position])) return false;
  return true;
}

/** Sizes and indices are plain numbers; arithmetic below (not 32-bit shifts) keeps them exact. */
function isTreeSize(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

function isOdd(n: number): boolean {
  return n % 2 === 1;
}

function half(n: number): number {
  return Math.floor(n / 2);
}

function isPowerOfTwo(n: number): boolean {
  while (n > 1 && !isOdd(n)) n /= 2;
  return n === 1;
}

/** For n ≥ 2 (tree sizes here are array lengths, below 2^32, so clz32 is exact). */
function largestPowerOfTwoBelow(n: number): number {
  return 2 ** (31 - Math.clz32(n - 1));
}

/** For an exact power of two below 2^32. */
function log2(powerOfTwo: number): number {
  return 31 - Math.clz32(powerOfTwo);
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(a, b) === 0;
}
