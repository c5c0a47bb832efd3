import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, type KeyObject } from 'node:crypto';
import {
  BlockError,
  GENESIS_PREVIOUS_HASH,
  GENESIS_TIME,
  blockHeaderHash,
  buildBlock,
  configChainHash,
  envelopeInclusionProof,
  validityHash,
  verifyBlock,
  verifyChain,
  verifyEnvelopeInclusion,
  type Block,
  type BlockHeader,
  type BlockProblem,
} from '../../src/ledger/block.ts';
import type { CutBlock } from '../../src/ledger/block-cutter.ts';
import { approveConfigChange, CommittedNonces, createEnvelope, newNonce, encodeEnvelope, type EnvelopeSigner, type ValidationContext } from '../../src/ledger/envelope.ts';
import { merkleRoot } from '../../src/ledger/merkle.ts';
import { Membership } from '../../src/ledger/membership.ts';

const CHANNEL = 'main';

function p256(): { publicKey: KeyObject; privateKey: KeyObject } {
  return generateKeyPairSync('ec', { namedCurve: 'P-256' });
}

const keys = { h1: p256(), h2: p256(), outsider: p256() };
const signer = (memberId: keyof typeof keys): EnvelopeSigner => ({ memberId, privateKey: keys[memberId].privateKey });
const members = new Membership({ h1: { publicKey: keys.h1.publicKey }, h2: { publicKey: keys.h2.publicKey } });

function context(committedNonces = new CommittedNonces()): Omit<ValidationContext, 'blockNumber'> {
  return { channel: CHANNEL, members, committedNonces };
}

let digestCounter = 0;
function anchorBytes(by: EnvelopeSigner, timestamp: string): Uint8Array {
  const digest = (digestCounter++).toString(16).padStart(64, '0');
  return encodeEnvelope(createEnvelope(by, { channel: CHANNEL, type: 'anchor', timestamp, payload: { entries: [{ digest, type: 'Observation' }] } }));
}

function cut(number: number, firstOffset: number, envelopes: Uint8Array[]): CutBlock {
  return {
    number,
    envelopes: envelopes.map((bytes, index) => ({ offset: firstOffset + index, bytes })),
    firstOffset,
    lastOffset: firstOffset + envelopes.length - 1,
    cutReason: 'maxMessages',
  };
}

/** Blocks 0..count-1 of three valid envelopes each, one minute apart. */
function chain(count: number): Block[] {
  const blocks: Block[] = [];
  for (let number = 0; number < count; number++) {
    const envelopes = [0, 1, 2].map((i) => anchorBytes(signer(i % 2 ? 'h2' : 'h1'), `2025-06-01T12:${String(number).padStart(2, '0')}:0${i}.000Z`));
    blocks.push(buildBlock(cut(number, number * 10, envelopes), blocks.at(-1)?.header, context()));
  }
  return blocks;
}

const paths = (problems: BlockProblem[]): string[] => problems.map(({ path }) => path);

describe('buildBlock', () => {
  it('gives two members the same header hash for the same cut batch', () => {
    const envelopes = [anchorBytes(signer('h1'), '2025-06-01T12:00:00.000Z'), anchorBytes(signer('h2'), '2025-06-01T12:00:01.000Z')];
    // Each member decodes its own copy of the bytes and keeps its own nonce index.
    const atMember1 = buildBlock(cut(0, 0, envelopes.map((bytes) => Uint8Array.from(bytes))), undefined, context());
    const atMember2 = buildBlock(cut(0, 0, envelopes.map((bytes) => Uint8Array.from(bytes))), undefined, context());
    assert.deepEqual(atMember1.header, atMember2.header);
    assert.equal(blockHeaderHash(atMember1.header), blockHeaderHash(atMember2.header));
  });

  it('fills the header from the batch and the previous header', () => {
    const [genesis, next] = chain(2);
    assert.equal(genesis.header.number, 0);
    assert.equal(genesis.header.previousHash, GENESIS_PREVIOUS_HASH);
    assert.equal(next.header.previousHash, blockHeaderHash(genesis.header));
    assert.equal(next.header.dataHash, Buffer.from(merkleRoot(next.envelopes)).toString('hex'));
    assert.deepEqual([next.header.envelopeCount, next.header.firstOffset, next.header.lastOffset], [3, 10, 12]);
    assert.equal(next.header.validityHash, validityHash(['valid', 'valid', 'valid']));
    assert.equal(next.header.time, '2025-06-01T12:01:02.000Z');
  });

  it('marks invalid envelopes in the block instead of dropping them, and hashes them too', () => {
    const valid = anchorBytes(signer('h1'), '2025-06-01T12:00:00.000Z');
    const outsider = anchorBytes(signer('outsider'), '2025-06-01T12:00:05.000Z');
    const garbage = new TextEncoder().encode('{"not":"an envelope"}');
    const block = buildBlock(cut(0, 0, [valid, outsider, garbage, valid]), undefined, context());
    assert.equal(block.envelopes.length, 4);
    assert.deepEqual(
      block.validity.map((v) => (v.valid ? 'valid' : v.reason)),
      ['valid', 'unknown-creator', 'malformed', 'replayed-nonce'],
    );
    assert.equal(block.header.dataHash, Buffer.from(merkleRoot([valid, outsider, garbage, valid])).toString('hex'));
    // The outsider's later timestamp does not move the block time: only valid envelopes count.
    assert.equal(block.header.time, '2025-06-01T12:00:00.000Z');
    assert.deepEqual(verifyBlock(block, undefined, context()), []);
  });

  it('never lets the time go backwards, and starts from GENESIS_TIME', () => {
    const [genesis] = chain(1);
    const earlier = buildBlock(cut(1, 10, [anchorBytes(signer('h1'), '2000-01-01T00:00:00.000Z')]), genesis.header, context());
    assert.equal(earlier.header.time, genesis.header.time);
    const onlyInvalid = buildBlock(cut(0, 0, [anchorBytes(signer('outsider'), '2025-06-01T12:00:00.000Z')]), undefined, context());
    assert.equal(onlyInvalid.header.time, GENESIS_TIME);
  });

  it('refuses a batch that does not follow the previous block', () => {
    const [genesis] = chain(1);
    const bytes = [anchorBytes(signer('h1'), '2025-06-01T12:00:00.000Z')];
    assert.throws(() => buildBlock(cut(2, 10, bytes), genesis.header, context()), BlockError);
    assert.throws(() => buildBlock(cut(1, 2, bytes), genesis.header, context()), BlockError);
    assert.throws(() => buildBlock(cut(1, 0, bytes), undefined, context()), BlockError);
    assert.throws(() => buildBlock(cut(1, 10, bytes), genesis.header, { ...context(), channel: 'other' }), BlockError);
  });
});

describe('header hash', () => {
  it('is SHA-256 over the prefix and the canonical JSON of the header (docs/proofs.md vector)', () => {
    const header: BlockHeader = {
      channel: 'main',
      number: 1,
      previousHash: '11'.repeat(32),
      dataHash: '22'.repeat(32),
      envelopeCount: 2,
      validityHash: '33'.repeat(32),
      firstOffset: 5,
      lastOffset: 7,
      time: '2025-06-01T12:00:00.000Z',
    };
    const text =
      'medblock/block-header/v1\n' +
      `{"channel":"main","dataHash":"${'22'.repeat(32)}","envelopeCount":2,"firstOffset":5,"lastOffset":7,` +
      `"number":1,"previousHash":"${'11'.repeat(32)}","time":"2025-06-01T12:00:00.000Z","validityHash":"${'33'.repeat(32)}"}`;
    const expected = '4c7a8d7c9bd0139f834c916af8b2323b56aafcbf81d06ca9eb8563498b647861';
    assert.equal(createHash('sha256').update(text, 'utf8').digest('hex'), expected);
    assert.equal(blockHeaderHash(header), expected);
    const codes = 'medblock/block-validity/v1\n["valid","bad-signature"]';
    assert.equal(createHash('sha256').update(codes, 'utf8').digest('hex'), '43ef76fb46fc6fdc0b3daa2d830a813f42d89d9786b25056b51c2bf0363fe850');
    assert.equal(validityHash(['valid', 'bad-signature']), '43ef76fb46fc6fdc0b3daa2d830a813f42d89d9786b25056b51c2bf0363fe850');
  });
});

describe('configHash', () => {
  const hashOf = (text: string) => createHash('sha256').update(text, 'utf8').digest('hex');

  it('is hashed only when present, sorted after channel (docs/proofs.md vector)', () => {
    const header: BlockHeader = {
      channel: 'main', number: 1, previousHash: '11'.repeat(32), dataHash: '22'.repeat(32), envelopeCount: 2,
      validityHash: '33'.repeat(32), firstOffset: 5, lastOffset: 7, time: '2025-06-01T12:00:00.000Z', configHash: '44'.repeat(32),
    };
    const text =
      'medblock/block-header/v1\n' +
      `{"channel":"main","configHash":"${'44'.repeat(32)}","dataHash":"${'22'.repeat(32)}","envelopeCount":2,"firstOffset":5,"lastOffset":7,` +
      `"number":1,"previousHash":"${'11'.repeat(32)}","time":"2025-06-01T12:00:00.000Z","validityHash":"${'33'.repeat(32)}"}`;
    const expected = '13d7255dcb0756df56d9ad2fa2e795647e059f956ea74871636ccfffe5b6ea32';
    assert.equal(hashOf(text), expected);
    assert.equal(blockHeaderHash(header), expected);
  });

  it('chains the SHA-256 of each valid config envelope per block (docs/proofs.md vector)', () => {
    const bytes = (text: string) => new Uint8Array(Buffer.from(text, 'utf8'));
    const first = 'e1b6f15825cdc7c7241ffc2c64a02bf7f997699e95bb94971b3150d9cd301b12';
    assert.equal(
      hashOf(`medblock/config-chain/v1\n{"block":3,"envelopes":["${hashOf('config one')}","${hashOf('config two')}"],"previous":"${'0'.repeat(64)}"}`),
      first,
    );
    assert.equal(configChainHash(undefined, 3, [bytes('config one'), bytes('config two')]), first);
    assert.equal(configChainHash(first, 7, [bytes('config three')]), 'b50bfd2497c368a3ecb40fdab83b94b29bed75df34527f7a89eda1c4dc0d552f');
    assert.equal(configChainHash(first, 8, []), first);
    assert.equal(configChainHash(undefined, 8, []), undefined);
  });

  it('is set by buildBlock from the first valid config envelope on, and checked by verifyBlock and verifyChain', () => {
    const nonce = newNonce();
    const change = { action: 'revokeMember' as const, member: 'h2' };
    const approvals = [approveConfigChange(signer('h1'), CHANNEL, nonce, change), approveConfigChange(signer('h2'), CHANNEL, nonce, change)];
    const config = encodeEnvelope(createEnvelope(signer('h1'), { channel: CHANNEL, type: 'config', nonce, timestamp: '2025-06-01T12:01:00.000Z', payload: { ...change, approvals } }));
    const block0 = buildBlock(cut(0, 0, [anchorBytes(signer('h1'), '2025-06-01T12:00:00.000Z')]), undefined, context());
    const block1 = buildBlock(cut(1, 1, [anchorBytes(signer('h1'), '2025-06-01T12:01:00.000Z'), config]), block0.header, context());
    const block2 = buildBlock(cut(2, 3, [anchorBytes(signer('h1'), '2025-06-01T12:02:00.000Z')]), block1.header, context());
    assert.deepEqual(block1.validity.map((v) => v.valid), [true, true]);
    assert.equal('configHash' in block0.header, false, 'absent while the chain has no config envelope');
    assert.equal(block1.header.configHash, configChainHash(undefined, 1, [config]));
    assert.equal(block2.header.configHash, block1.header.configHash);
    assert.deepEqual([block0, block1, block2].flatMap((b, i) => verifyBlock(b, [block0, block1][i - 1]?.header, context())), []);
    assert.deepEqual(verifyChain([block0.header, block1.header, block2.header]), []);

    assert.deepEqual(paths(verifyBlock({ ...block1, header: { ...block1.header, configHash: 'ab'.repeat(32) } }, block0.header)), ['/header/configHash']);
    const dropped = { ...block2, header: { ...block2.header } };
    delete dropped.header.configHash;
    assert.deepEqual(paths(verifyBlock(dropped, block1.header)), ['/header/configHash', '/header/configHash']);
    assert.deepEqual(paths(verifyChain([block1.header, dropped.header], block0.header)), ['/1/configHash']);
    assert.deepEqual(paths(verifyChain([{ ...block0.header, configHash: 'x' }])), ['/0/configHash']);
  });
});

describe('verifyChain', () => {
  const headers = (): BlockHeader[] => chain(4).map(({ header }) => header);

  it('accepts an intact chain, and a segment given the header before it', () => {
    const all = headers();
    assert.deepEqual(verifyChain(all), []);
    assert.deepEqual(verifyChain(all.slice(2), all[1]), []);
  });

  it('detects a tampered header field through the next header', () => {
    for (const tamper of [
      (h: BlockHeader) => void (h.time = '2025-06-01T12:01:30.000Z'),
      (h: BlockHeader) => void (h.dataHash = 'ff'.repeat(32)),
      (h: BlockHeader) => void (h.envelopeCount = 2),
    ]) {
      const all = headers();
      tamper(all[1]);
      assert.deepEqual(paths(verifyChain(all)), ['/2/previousHash']);
    }
  });

  it('detects a changed previousHash', () => {
    const all = headers();
    all[2].previousHash = 'ab'.repeat(32);
    // Block 2 no longer links to block 1, and block 3 no longer links to the changed block 2.
    assert.deepEqual(paths(verifyChain(all)), ['/2/previousHash', '/3/previousHash']);
  });

  it('detects a gap in the numbers', () => {
    const all = headers();
    const problems = verifyChain([all[0], all[1], all[3]]);
    assert.deepEqual(paths(problems), ['/2/number', '/2/previousHash']);
    assert.match(problems[0].problem, /block 3 does not follow block 1/);
  });

  it('detects reordered headers', () => {
    const all = headers();
    const problems = verifyChain([all[0], all[2], all[1], all[3]]);
    assert.ok(paths(problems).includes('/1/number'));
    assert.ok(paths(problems).includes('/2/previousHash'));
    assert.ok(paths(problems).includes('/3/previousHash'));
  });

  it('requires the chain to start at block 0 with the all-zero previousHash', () => {
    const all = headers();
    assert.deepEqual(paths(verifyChain(all.slice(1))), ['/0/number', '/0/previousHash']);
  });

  it('reports malformed headers without throwing', () => {
    const all: unknown[] = headers();
    all[1] = { ...(all[1] as BlockHeader), number: -1, extra: true };
    assert.deepEqual(paths(verifyChain(all)), ['/1/extra', '/1/number']);
    assert.deepEqual(paths(verifyChain([null, 'x'])), ['/0', '/1']);
    assert.deepEqual(paths(verifyChain('not a list' as unknown as unknown[])), ['']);
  });
});

describe('verifyBlock', () => {
  it('accepts built blocks', () => {
    const blocks = chain(3);
    blocks.forEach((block, i) => assert.deepEqual(verifyBlock(block, blocks[i - 1]?.header, context()), []));
  });

  it('detects a flipped envelope byte', () => {
    const [genesis, block] = chain(2);
    block.envelopes[1] = Uint8Array.from(block.envelopes[1]);
    block.envelopes[1][40] ^= 1;
    const problems = paths(verifyBlock(block, genesis.header));
    assert.ok(problems.includes('/header/dataHash'));
  });

  it('detects a tampered header field, previousHash, number and validity marks', () => {
    const [genesis, block] = chain(2);
    const check = (change: (b: Block) => void): string[] => {
      const copy: Block = { ...block, header: { ...block.header }, validity: [...block.validity] };
      change(copy);
      return paths(verifyBlock(copy, genesis.header, context()));
    };
    assert.deepEqual(check((b) => void (b.header.time = '2025-06-01T12:05:00.000Z')), ['/header/time']);
    assert.deepEqual(check((b) => void (b.header.previousHash = 'ab'.repeat(32))), ['/header/previousHash']);
    assert.deepEqual(check((b) => void (b.header.number = 2)), ['/header/number']);
    assert.deepEqual(check((b) => void (b.header.firstOffset = 2)), ['/header/firstOffset']);
    assert.deepEqual(
      // Envelope 2 holds the latest timestamp, so the recomputed time changes too.
      check((b) => void (b.validity[2] = { valid: false, reason: 'bad-signature', detail: 'forged' })),
      ['/header/validityHash', '/header/time', '/validity/2'],
    );
  });

  it('reports malformed blocks without throwing', () => {
    assert.deepEqual(paths(verifyBlock(null, undefined)), ['']);
    assert.deepEqual(paths(verifyBlock({ header: {}, envelopes: [], validity: [] }, undefined)).slice(-1), ['/envelopes']);
    const [block] = chain(1);
    assert.deepEqual(paths(verifyBlock({ ...block, validity: [] }, undefined)), ['/validity']);
  });
});

describe('envelope inclusion proofs', () => {
  it('prove each envelope and its verdict against the header', () => {
    const outsider = anchorBytes(signer('outsider'), '2025-06-01T12:00:00.000Z');
    const envelopes = [anchorBytes(signer('h1'), '2025-06-01T12:00:00.000Z'), outsider, anchorBytes(signer('h2'), '2025-06-01T12:00:01.000Z')];
    const block = buildBlock(cut(0, 0, envelopes), undefined, context());
    envelopes.forEach((bytes, index) => {
      const check = verifyEnvelopeInclusion(bytes, envelopeInclusionProof(block, index), block.header);
      assert.deepEqual(check, { included: true, validity: index === 1 ? 'unknown-creator' : 'valid' });
    });
  });

  it('fail for another envelope, a changed path, forged verdicts or another block', () => {
    const [genesis, block] = chain(2);
    const proof = envelopeInclusionProof(block, 1);
    const fails = (bytes: unknown, p: unknown, header = block.header): boolean => !verifyEnvelopeInclusion(bytes, p, header).included;
    assert.ok(fails(block.envelopes[0], proof));
    assert.ok(fails(block.envelopes[1], { ...proof, auditPath: [...proof.auditPath].reverse() }));
    assert.ok(fails(block.envelopes[1], { ...proof, validity: ['valid', 'bad-signature', 'valid'] }));
    assert.ok(fails(block.envelopes[1], { ...proof, index: 7 }));
    assert.ok(fails(block.envelopes[1], proof, genesis.header));
    assert.ok(fails(block.envelopes[1], { ...proof, validity: ['valid', '\ud800', 'valid'] }));
    assert.ok(fails(block.envelopes[1], null));
  });
});
