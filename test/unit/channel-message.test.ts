/**
 * The channel message codec (src/ledger/orderer.ts): what every member reads from the ordered log. A
 * message round-trips exactly; anything else — including near-misses of a time-to-cut marker — decodes
 * to undefined without throwing, and what does decode is exactly what encodeChannelMessage writes, so
 * a record has one reading on every member.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import { describe, it } from 'node:test';
import { decodeChannelMessage, encodeChannelMessage, type ChannelMessage } from '../../src/ledger/orderer.ts';

const bytes = (text: string) => Buffer.from(text, 'latin1');
const marker = (body: string) => bytes(`T${body}`);

describe('channel messages', () => {
  it('round-trip all three kinds', () => {
    const messages: ChannelMessage[] = [
      { kind: 'envelope', bytes: bytes('{"channel":"c"}') },
      { kind: 'envelope', bytes: Buffer.alloc(0) },
      { kind: 'envelope', bytes: randomBytes(1024 * 1024) },
      { kind: 'attestation', bytes: bytes('{"blockNumber":3}') },
      { kind: 'attestation', bytes: Buffer.alloc(0) },
      { kind: 'timeToCut', blockNumber: 0 },
      { kind: 'timeToCut', blockNumber: 1 },
      { kind: 'timeToCut', blockNumber: 1234567 },
      { kind: 'timeToCut', blockNumber: Number.MAX_SAFE_INTEGER },
    ];
    for (const message of messages) {
      const encoded = encodeChannelMessage(message);
      assert.deepEqual(decodeChannelMessage(encoded), message);
      assert.ok(Buffer.from(encodeChannelMessage(decodeChannelMessage(encoded)!)).equals(encoded));
    }
    assert.deepEqual([...encodeChannelMessage({ kind: 'timeToCut', blockNumber: 42 })], [...bytes('T{"blockNumber":42}')]);
    assert.deepEqual([...encodeChannelMessage({ kind: 'envelope', bytes: bytes('x') })], [...bytes('Ex')]);
    assert.deepEqual([...encodeChannelMessage({ kind: 'attestation', bytes: bytes('y') })], [...bytes('Ay')]);
  });

  it('refuses to encode a marker no member would decode', () => {
    for (const blockNumber of [-1, 1.5, NaN, Infinity, Number.MAX_SAFE_INTEGER + 1]) {
      assert.throws(() => encodeChannelMessage({ kind: 'timeToCut', blockNumber }), RangeError, String(blockNumber));
    }
  });

  it('decodes the empty record and unknown tags to undefined', () => {
    assert.equal(decodeChannelMessage(new Uint8Array(0)), undefined);
    for (let tag = 0; tag < 256; tag++) {
      if ('EAT'.includes(String.fromCharCode(tag))) continue;
      assert.equal(decodeChannelMessage(Uint8Array.of(tag)), undefined, `tag ${tag}`);
      assert.equal(decodeChannelMessage(Buffer.concat([Uint8Array.of(tag), bytes('{"blockNumber":1}')])), undefined, `tag ${tag}`);
    }
    for (const lowercase of ['e', 'a', 't']) assert.equal(decodeChannelMessage(bytes(`${lowercase}{"blockNumber":1}`)), undefined);
  });

  it('decodes a marker only in its one canonical spelling', () => {
    const bad = [
      '', '{}', '{"blockNumber":}', '{"blockNumber":01}', '{"blockNumber":00}', '{"blockNumber":-1}', '{"blockNumber":-0}',
      '{"blockNumber":+1}', '{"blockNumber":1.0}', '{"blockNumber":1.5}', '{"blockNumber":1e3}', '{"blockNumber":0x10}',
      '{"blockNumber":"1"}', '{"blockNumber":null}', '{"blockNumber":[1]}', '{"blockNumber":true}',
      '{"blockNumber":9007199254740992}', '{"blockNumber":9999999999999999}', '{"blockNumber":12345678901234567}',
      `{"blockNumber":${'9'.repeat(400)}}`,
      '{"blockNumber":1,"x":2}', '{"x":2,"blockNumber":1}', '{"blockNumber":1,"blockNumber":2}', '{"blocknumber":1}',
      '{"blockNumber" :1}', '{ "blockNumber":1}', '{"blockNumber": 1}', '{"blockNumber":1 }', ' {"blockNumber":1}',
      '{"blockNumber":1} ', '{"blockNumber":1}\n', '\n{"blockNumber":1}', '{"blockNumber":1}\0', '{"block\\u004eumber":1}',
      '\u00ef\u00bb\u00bf{"blockNumber":1}', // a UTF-8 byte order mark
      '{"blockNumber":\u00b9}', // superscript one, a single latin1 byte
      '{"blockNumber":1}{"blockNumber":2}', '[{"blockNumber":1}]',
    ];
    for (const body of bad) assert.equal(decodeChannelMessage(marker(body)), undefined, JSON.stringify(body));
    assert.equal(decodeChannelMessage(Buffer.concat([bytes('T{"blockNumber":'), Buffer.from('１', 'utf8'), bytes('}')])), undefined,
      'a full-width digit');
    assert.deepEqual(decodeChannelMessage(marker('{"blockNumber":9007199254740991}')), { kind: 'timeToCut', blockNumber: Number.MAX_SAFE_INTEGER });
  });

  it('never throws on random bytes, and decodes only what encodeChannelMessage writes', () => {
    const alphabet = bytes('{}":,blockNumber0123456789-+.eE \n\0x');
    const randomRecord = (): Uint8Array => {
      const length = randomInt(0, 40);
      switch (randomInt(0, 3)) {
        case 0: return randomBytes(length); // anything
        case 1: { // a tag followed by marker-like noise
          const body = Buffer.from(Array.from({ length }, () => alphabet[randomInt(0, alphabet.length)]!));
          return Buffer.concat([bytes('TEA'.charAt(randomInt(0, 3))), body]);
        }
        default: { // a valid marker with one byte changed, inserted or removed
          const valid = Buffer.from(encodeChannelMessage({ kind: 'timeToCut', blockNumber: randomInt(0, 2 ** 47) }));
          const at = randomInt(0, valid.length);
          const mutation = randomInt(0, 3);
          if (mutation === 0) valid[at] = randomInt(0, 256);
          if (mutation === 1) return Buffer.concat([valid.subarray(0, at), Uint8Array.of(randomInt(0, 256)), valid.subarray(at)]);
          if (mutation === 2) return Buffer.concat([valid.subarray(0, at), valid.subarray(at + 1)]);
          return valid;
        }
      }
    };
    let decoded = 0;
    for (let i = 0; i < 20_000; i++) {
      const record = randomRecord();
      let message: ChannelMessage | undefined;
      assert.doesNotThrow(() => { message = decodeChannelMessage(record); }, `decoding ${Buffer.from(record).toString('hex')}`);
      if (message === undefined) continue;
      decoded++;
      assert.ok(Buffer.from(encodeChannelMessage(message)).equals(record), `${Buffer.from(record).toString('hex')} is canonical`);
    }
    assert.ok(decoded > 1000, `the random records include decodable ones (${decoded})`);
  });
});
