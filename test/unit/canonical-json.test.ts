import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { LosslessNumber } from 'lossless-json';
import { FhirDecimal, deepEqualFhir, parseFhirJson } from '../../src/fhir/json.ts';
import {
  CanonicalJsonError,
  canonicalDigest,
  canonicalDigestHex,
  canonicalize,
} from '../../src/ledger/canonical-json.ts';

const sha256Hex = (s: string): string => createHash('sha256').update(s, 'utf8').digest('hex');

// ---------------------------------------------------------------------------------------------
// RFC 8785 vectors (https://www.rfc-editor.org/rfc/rfc8785)
// ---------------------------------------------------------------------------------------------

/** RFC 8785 §3.2.2: the sample input (its line wrap inside "numbers" is insignificant whitespace). */
const RFC_SAMPLE_INPUT = String.raw`{
  "numbers": [333333333.33333329, 1E30, 4.50,
              2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}`;

/** RFC 8785 §3.2.3: the sample, canonicalized (the RFC's display line wrap removed). */
const RFC_SAMPLE_CANONICAL = String.raw`{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}`;

/** RFC 8785 §3.2.4: the UTF-8 bytes of the canonicalized sample. */
const RFC_SAMPLE_UTF8_HEX = `
  7b 22 6c 69 74 65 72 61 6c 73 22 3a 5b 6e 75 6c 6c 2c 74 72
  75 65 2c 66 61 6c 73 65 5d 2c 22 6e 75 6d 62 65 72 73 22 3a
  5b 33 33 33 33 33 33 33 33 33 2e 33 33 33 33 33 33 33 2c 31
  65 2b 33 30 2c 34 2e 35 2c 30 2e 30 30 32 2c 31 65 2d 32 37
  5d 2c 22 73 74 72 69 6e 67 22 3a 22 e2 82 ac 24 5c 75 30 30
  30 66 5c 6e 41 27 42 5c 22 5c 5c 5c 5c 5c 22 2f 22 7d`.replace(/\s+/g, '');

/** RFC 8785 §3.2.3: property sorting test data. */
const RFC_SORTING_INPUT = String.raw`{
    "\u20ac": "Euro Sign",
    "\r": "Carriage Return",
    "\ufb33": "Hebrew Letter Dalet With Dagesh",
    "1": "One",
    "\ud83d\ude00": "Emoji: Grinning Face",
    "\u0080": "Control",
    "\u00f6": "Latin Small Letter O With Diaeresis"
  }`;

/** RFC 8785 §3.2.3: "Expected argument order after sorting property strings". */
const RFC_SORTING_EXPECTED_ORDER = [
  'Carriage Return',
  'One',
  'Control',
  'Latin Small Letter O With Diaeresis',
  'Euro Sign',
  'Emoji: Grinning Face',
  'Hebrew Letter Dalet With Dagesh',
];

/**
 * RFC 8785 Appendix B, Table 1 ("ECMAScript-Compatible JSON Number Serialization Samples"):
 * IEEE 754 bit pattern (hex) → JSON representation; null = must be rejected (NaN, Infinity).
 */
const RFC_APPENDIX_B: Array<[string, string | null, string]> = [
  ['0000000000000000', '0', 'Zero'],
  ['8000000000000000', '0', 'Minus zero'],
  ['0000000000000001', '5e-324', 'Min pos number'],
  ['8000000000000001', '-5e-324', 'Min neg number'],
  ['7fefffffffffffff', '1.7976931348623157e+308', 'Max pos number'],
  ['ffefffffffffffff', '-1.7976931348623157e+308', 'Max neg number'],
  ['4340000000000000', '9007199254740992', 'Max pos int'],
  ['c340000000000000', '-9007199254740992', 'Max neg int'],
  ['4430000000000000', '295147905179352830000', '~2**68'],
  ['7fffffffffffffff', null, 'NaN'],
  ['7ff0000000000000', null, 'Infinity'],
  ['44b52d02c7e14af5', '9.999999999999997e+22', ''],
  ['44b52d02c7e14af6', '1e+23', ''],
  ['44b52d02c7e14af7', '1.0000000000000001e+23', ''],
  ['444b1ae4d6e2ef4e', '999999999999999700000', ''],
  ['444b1ae4d6e2ef4f', '999999999999999900000', ''],
  ['444b1ae4d6e2ef50', '1e+21', ''],
  ['3eb0c6f7a0b5ed8c', '9.999999999999997e-7', ''],
  ['3eb0c6f7a0b5ed8d', '0.000001', ''],
  ['41b3de4355555553', '333333333.3333332', ''],
  ['41b3de4355555554', '333333333.33333325', ''],
  ['41b3de4355555555', '333333333.3333333', ''],
  ['41b3de4355555556', '333333333.3333334', ''],
  ['41b3de4355555557', '333333333.33333343', ''],
  ['becbf647612f3696', '-0.0000033333333333333333', ''],
  ['43143ff3c1cb0959', '1424953923781206.2', 'Round to even'],
];

const fromIeee754Hex = (hex: string): number => Buffer.from(hex, 'hex').readDoubleBE(0);

describe('canonicalize: RFC 8785 vectors', () => {
  it('§3.2.2–3.2.4: the sample input canonicalizes to the RFC text and bytes', () => {
    const canonical = canonicalize(JSON.parse(RFC_SAMPLE_INPUT));
    assert.equal(canonical, RFC_SAMPLE_CANONICAL);
    assert.equal(Buffer.from(canonical, 'utf8').toString('hex'), RFC_SAMPLE_UTF8_HEX);
    assert.equal(canonicalDigestHex(JSON.parse(RFC_SAMPLE_INPUT)), sha256Hex(RFC_SAMPLE_CANONICAL));
    assert.equal(
      canonicalDigestHex(JSON.parse(RFC_SAMPLE_INPUT)),
      createHash('sha256').update(Buffer.from(RFC_SAMPLE_UTF8_HEX, 'hex')).digest('hex'),
    );
  });

  it('§3.2.3: members are sorted by UTF-16 code units (non-ASCII names)', () => {
    const canonical = canonicalize(JSON.parse(RFC_SORTING_INPUT));
    // (Read the values from the text: JSON.parse would enumerate the integer-like name "1" first.)
    const valuesInTextOrder = [...canonical.matchAll(/":"([^"]*)"/g)].map((m) => m[1]);
    assert.deepEqual(valuesInTextOrder, RFC_SORTING_EXPECTED_ORDER);
    // The same, as text: U+0080 and the others are written as is; CR as \r.
    assert.equal(
      canonical,
      '{"\\r":"Carriage Return","1":"One","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis",' +
        '"\u20ac":"Euro Sign","\ud83d\ude00":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}',
    );
  });

  it('§3.2.3: "" < "a" < "aa" < "ab"', () => {
    assert.equal(canonicalize({ ab: 4, aa: 3, a: 2, '': 1 }), '{"":1,"a":2,"aa":3,"ab":4}');
  });

  for (const [hex, expected, comment] of RFC_APPENDIX_B) {
    const label = `Appendix B: ${hex} → ${expected ?? 'error'}${comment ? ` (${comment})` : ''}`;
    it(label, () => {
      const n = fromIeee754Hex(hex);
      if (expected === null) {
        assert.throws(() => canonicalize(n), CanonicalJsonError);
        assert.throws(() => canonicalize([n]), CanonicalJsonError);
      } else {
        assert.equal(canonicalize(n), expected);
        assert.equal(canonicalize({ n: [n] }), `{"n":[${expected}]}`);
      }
    });
  }

  it('Appendix E: string subtypes stay strings', () => {
    const input = '{"time": "2019-01-28T07:45:10Z", "big": "055", "val": 3.5}';
    assert.equal(canonicalize(JSON.parse(input)), '{"big":"055","time":"2019-01-28T07:45:10Z","val":3.5}');
    assert.equal(canonicalize(parseFhirJson(input)), '{"big":"055","time":"2019-01-28T07:45:10Z","val":3.5}');
  });
});

// ---------------------------------------------------------------------------------------------
// The FHIR exception and digests
// ---------------------------------------------------------------------------------------------

/** A small FHIR resource, as a client might send it (pretty-printed, members in any order). */
const OBSERVATION_TEXT = `{
  "resourceType": "Observation",
  "id": "weight-1",
  "status": "final",
  "code": {
    "text": "K\u00f6rpergewicht",
    "coding": [ { "system": "http://loinc.org", "code": "29463-7", "display": "Body weight" } ]
  },
  "subject": { "reference": "Patient/example" },
  "valueQuantity": { "value": 72.50, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg" }
}`;

/** Its canonical form, written out by hand from the rule in docs/proofs.md. */
const OBSERVATION_CANONICAL =
  '{"code":{"coding":[{"code":"29463-7","display":"Body weight","system":"http://loinc.org"}],"text":"Körpergewicht"},' +
  '"id":"weight-1","resourceType":"Observation","status":"final","subject":{"reference":"Patient/example"},' +
  '"valueQuantity":{"code":"kg","system":"http://unitsofmeasure.org","unit":"kg","value":72.50}}';

/** SHA-256 of OBSERVATION_CANONICAL's UTF-8, computed outside Node (coreutils sha256sum). */
const OBSERVATION_SHA256 = '729cb98adecf2c6314448613ad2a12846fd05312dea6abfb440bacabd6aac1c3';

describe('canonicalize: FHIR decimals keep their lexeme', () => {
  it('{"value": 1.50} canonicalizes to {"value":1.50}', () => {
    assert.equal(canonicalize(parseFhirJson('{"value": 1.50}')), '{"value":1.50}');
    // ... whereas plain JCS (JS numbers) would drop the precision:
    assert.equal(canonicalize(JSON.parse('{"value": 1.50}')), '{"value":1.5}');
    assert.notEqual(canonicalDigestHex(parseFhirJson('{"value":1.50}')), canonicalDigestHex(parseFhirJson('{"value":1.5}')));
  });

  it('every number of a parsed document is written exactly as it arrived', () => {
    const text = '{"b":[0.0,-0.0,1E+2,12345678901234567890,0,-1.5e-7,0.1,100],"a":{"y":29.0,"x":-0}}';
    assert.equal(
      canonicalize(parseFhirJson(text)),
      '{"a":{"x":-0,"y":29.0},"b":[0.0,-0.0,1E+2,12345678901234567890,0,-1.5e-7,0.1,100]}',
    );
  });

  it('the RFC sample under the FHIR rule keeps all its number lexemes', () => {
    assert.equal(
      canonicalize(parseFhirJson(RFC_SAMPLE_INPUT)),
      String.raw`{"literals":[null,true,false],"numbers":[333333333.33333329,1E30,4.50,2e-3,0.000000000000000000000000001],"string":"€$\u000f\nA'B\"\\\\\"/"}`,
    );
  });

  it('accepts plain lossless-json LosslessNumbers and rejects invalid lexemes', () => {
    assert.equal(canonicalize({ v: new LosslessNumber('2.50'), w: new FhirDecimal('1e2') }), '{"v":2.50,"w":1e2}');
    const bad = new FhirDecimal('1.0');
    bad.value = '1.0"}';
    assert.throws(() => canonicalize({ v: bad }), CanonicalJsonError);
  });

  it('digest vector: a small Observation', () => {
    const resource = parseFhirJson(OBSERVATION_TEXT);
    assert.equal(canonicalize(resource), OBSERVATION_CANONICAL);
    assert.equal(sha256Hex(OBSERVATION_CANONICAL), OBSERVATION_SHA256);
    assert.equal(canonicalDigestHex(resource), OBSERVATION_SHA256);
    assert.deepEqual(canonicalDigest(resource), Buffer.from(OBSERVATION_SHA256, 'hex'));
    // Key order and whitespace of the input do not matter; the decimal's lexeme does.
    assert.equal(canonicalDigestHex(parseFhirJson(OBSERVATION_CANONICAL)), OBSERVATION_SHA256);
    assert.notEqual(canonicalDigestHex(parseFhirJson(OBSERVATION_TEXT.replace('72.50', '72.5'))), OBSERVATION_SHA256);
  });
});

describe('canonicalize: other rules', () => {
  it('writes -0 as 0, sorts integer-like names as strings, omits undefined members', () => {
    assert.equal(canonicalize(-0), '0');
    assert.equal(canonicalize({ '10': 1, '9': 2, '1': 3, a: 4, ' ': 5 }), '{" ":5,"1":3,"10":1,"9":2,"a":4}');
    assert.equal(canonicalize({ b: undefined, a: [true, null, 'x'] }), '{"a":[true,null,"x"]}');
    assert.equal(canonicalize(Object.assign(Object.create(null) as object, { z: 1, y: 2 })), '{"y":2,"z":1}');
    assert.equal(canonicalize([]), '[]');
    assert.equal(canonicalize({}), '{}');
    assert.equal(canonicalize('\u2028\u0000\u001f\t'), '"\u2028\\u0000\\u001f\\t"');
  });

  it('rejects what JSON cannot represent, with a path to it', () => {
    const cases: Array<[unknown, string]> = [
      [undefined, ''],
      [[1, undefined], '/1'],
      [{ a: [1, { b: Number.NaN }] }, '/a/1/b'],
      [{ a: Infinity }, '/a'],
      [{ 'x/y': -Infinity }, '/x~1y'],
      [{ s: 'ok\ud800' }, '/s'],
      [{ ['\udc00']: 1 }, '/\udc00'],
      [{ f: () => 1 }, '/f'],
      [{ n: 1n }, '/n'],
      [{ d: new Date(0) }, '/d'],
      [{ m: new Map() }, '/m'],
      [[Symbol('s')], '/0'],
    ];
    for (const [value, path] of cases) {
      assert.throws(
        () => canonicalize(value),
        (e: unknown) => e instanceof CanonicalJsonError && e.path === path,
        `path ${path}`,
      );
    }
  });

  it('rejects cycles', () => {
    const a: Record<string, unknown> = { x: 1 };
    a.self = a;
    assert.throws(() => canonicalize(a), CanonicalJsonError);
  });

  it('is re-entrant (a getter that canonicalizes)', () => {
    const v = {
      get b(): string {
        return canonicalize({ z: [1, 2], y: 'in' });
      },
      a: 1,
    };
    assert.equal(canonicalize(v), '{"a":1,"b":"{\\"y\\":\\"in\\",\\"z\\":[1,2]}"}');
  });

  it('large values (chunked output) equal the unchunked text and digest', () => {
    // Members already sorted and no special numbers: then JCS equals JSON.stringify.
    const big = Array.from({ length: 5000 }, (_, i) => ({ a: i, b: `entry ${i} \u00e9`, c: [i / 7, true, null] }));
    const text = canonicalize(big);
    assert.ok(text.length > 4 * 65536);
    assert.equal(text, JSON.stringify(big));
    assert.equal(canonicalDigestHex(big), sha256Hex(text));
  });
});

// ---------------------------------------------------------------------------------------------
// Synthea
// ---------------------------------------------------------------------------------------------

const SYNTHEA_DIR = fileURLToPath(new URL('../../../shared/fhir-data/synthea/hiv-2021/', import.meta.url));
const syntheaFiles = existsSync(SYNTHEA_DIR) ? readdirSync(SYNTHEA_DIR).filter((f) => f.endsWith('.json')).sort() : [];

describe('canonicalize: Synthea bundles', { skip: syntheaFiles.length === 0 ? `no data in ${SYNTHEA_DIR}` : false }, () => {
  for (const file of syntheaFiles.slice(0, 2)) {
    it(`${file}: canonical text re-parses to the same data, is a fixed point, and digests consistently`, () => {
      const parsed = parseFhirJson(readFileSync(SYNTHEA_DIR + file, 'utf8')) as { entry: Array<{ resource: unknown }> };
      const canonical = canonicalize(parsed);
      assert.ok(deepEqualFhir(parseFhirJson(canonical), parsed));
      assert.equal(canonicalize(parseFhirJson(canonical)), canonical);
      assert.equal(canonicalDigestHex(parsed), sha256Hex(canonical));
      for (const { resource } of parsed.entry.slice(0, 50)) {
        assert.equal(canonicalDigestHex(resource), sha256Hex(canonicalize(resource)));
      }
    });
  }
});
