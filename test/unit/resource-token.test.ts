/**
 * Resource locator tokens (src/ledger/patient-token.ts): the vectors of docs/federation.md, read from the
 * document itself (computed there by an independent Python implementation).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { locatorToken, resourceLocatorToken } from '../../src/ledger/patient-token.ts';

const doc = readFileSync(join(import.meta.dirname, '..', '..', 'docs', 'federation.md'), 'utf8');

/** Rows `| Rn | `key hex` | `hospital` | `Type/id` | `token` |` of the "Resource locator tokens" section. */
function vectors() {
  const section = doc.slice(doc.indexOf('## Resource locator tokens'));
  return [...section.matchAll(/^\| (R\d+) \| `([0-9a-f]{64})` \| `([^`]+)` \| `([^`]+)` \| `([A-Za-z0-9_-]{43})` \|$/gm)].map(
    ([, name, key, hospital, reference, token]) => ({ name, key: Buffer.from(key, 'hex'), hospital, reference, token }),
  );
}

describe('resource locator tokens: the docs/federation.md vectors', () => {
  const rows = vectors();

  it('the document lists the five vectors', () => {
    assert.deepEqual(rows.map((v) => v.name), ['R1', 'R2', 'R3', 'R4', 'R5']);
  });

  for (const v of rows) {
    it(`${v.name}: ${v.hospital} ${v.reference} derives the documented token`, () => {
      assert.equal(resourceLocatorToken(v.key, v.hospital, v.reference), v.token);
    });
  }

  it('differs from the locator token of the same reference (another HKDF info prefix)', () => {
    const [r1] = rows;
    assert.notEqual(locatorToken(r1.key, r1.hospital, r1.reference), r1.token);
  });
});
