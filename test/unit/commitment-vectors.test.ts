/**
 * The commitment test vectors of docs/proofs.md ("Commitment test vectors"), read from the document itself,
 * so the published values and the implementation cannot drift apart.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parseFhirJson } from '../../src/fhir/json.ts';
import { COMMITMENT_SALT_BYTES, versionCommitmentHex } from '../../src/ledger/canonical-json.ts';

const doc = readFileSync(join(import.meta.dirname, '..', '..', 'docs', 'proofs.md'), 'utf8');

/** The JSON block after "Observation (row 7):" (the canonical-JSON vectors' row 7 input). */
function observationRow7(): string {
  const match = /Observation \(row 7\):\s*```json\n([\s\S]*?)```/.exec(doc);
  assert.ok(match, 'docs/proofs.md has the row 7 Observation');
  return match[1];
}

/** Rows `| Cn | `salt` | `input` or "the Observation of row 7" | `commitment` |`. */
function vectors(): Array<{ name: string; salt: string; input: string; commitment: string }> {
  const section = doc.slice(doc.indexOf('#### Commitment test vectors'));
  const rows = [...section.matchAll(/^\| (C\d+) \| `([0-9a-f]+)` \| (`(.*)`|the Observation of row 7) \| `([0-9a-f]{64})` \|$/gm)];
  return rows.map(([, name, salt, , inline, commitment]) => ({ name, salt, input: inline ?? observationRow7(), commitment }));
}

describe('version commitments (docs/proofs.md vectors)', () => {
  const table = vectors();

  it('the document lists the five vectors', () => {
    assert.deepEqual(table.map((v) => v.name), ['C1', 'C2', 'C3', 'C4', 'C5']);
  });

  for (const v of table) {
    it(`${v.name}: SHA-256(tag ‖ salt ‖ canonical JSON) is the documented commitment`, () => {
      assert.equal(versionCommitmentHex(Buffer.from(v.salt, 'hex'), parseFhirJson(v.input)), v.commitment);
    });
  }

  it('a salt changes the commitment, and a wrong-sized salt is refused', () => {
    const [c1, c2, c3] = table;
    assert.equal(c1.input, c3.input);
    assert.notEqual(c1.commitment, c3.commitment);
    assert.notEqual(c1.commitment, c2.commitment, '1.50 and 1.5 stay distinct');
    assert.throws(() => versionCommitmentHex(Buffer.alloc(COMMITMENT_SALT_BYTES - 1), {}), RangeError);
  });
});
