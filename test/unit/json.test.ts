import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  FhirDecimal,
  FhirJsonSyntaxError,
  LosslessNumber,
  deepEqualFhir,
  isLosslessNumber,
  numberLexeme,
  parseFhirJson,
  stringifyFhirJson,
  toNumber,
} from '../../src/fhir/json.ts';

/** parse then stringify (compact) */
const roundTrip = (text: string): string => stringifyFhirJson(parseFhirJson(text));

describe('parseFhirJson / stringifyFhirJson: number lexemes', () => {
  const lexemes = ['1.50', '0.0', '-0.0', '-0', '1e2', '1E+2', '1e-7', '391.83200000000005', '12345678901234567890', '9007199254740993', '0.1', '29.0', '100', '-3'];

  for (const lexeme of lexemes) {
    it(`keeps ${lexeme} as an object member, array element and top-level value`, () => {
      assert.equal(roundTrip(`{"value":${lexeme}}`), `{"value":${lexeme}}`);
      assert.equal(roundTrip(`[${lexeme},${lexeme}]`), `[${lexeme},${lexeme}]`);
      assert.equal(roundTrip(lexeme), lexeme);
    });
  }

  it('returns JS numbers for lexemes that round-trip and FhirDecimals for the others', () => {
    const v = parseFhirJson('{"a":0.1,"b":100,"c":1.50,"d":0.0,"e":1e2,"f":12345678901234567890}') as Record<string, unknown>;
    assert.equal(v.a, 0.1);
    assert.equal(v.b, 100);
    for (const k of ['c', 'd', 'e', 'f']) {
      assert.ok(v[k] instanceof FhirDecimal, k);
      assert.ok(isLosslessNumber(v[k]), k);
      assert.ok(v[k] instanceof LosslessNumber, k);
    }
    assert.equal((v.c as LosslessNumber).value, '1.50');
    assert.equal((v.f as LosslessNumber).value, '12345678901234567890');
    assert.equal(toNumber(v.c as LosslessNumber), 1.5);
    assert.equal(toNumber(v.a as number), 0.1);
    assert.equal(numberLexeme(v.d as LosslessNumber), '0.0');
    assert.equal(numberLexeme(-0), '0');
    assert.throws(() => numberLexeme(Number.NaN), TypeError);
    assert.equal(isLosslessNumber(1.5), false);
    assert.equal(isLosslessNumber({ value: '1.5', isLosslessNumber: true }), false);
  });

  it('leaves number-like text inside strings alone, including around escaped quotes and backslashes', () => {
    const texts = [
      '{"a":"1.50","b":1.50}',
      '["x\\"1.0\\"",2.50,"\\\\",0.0,"\\\\\\"",3.10,"\\"",4.00]',
      '{"k\\"0.0":"v\\\\","n":[5.50,"\\\\\\\\",6.60]}',
    ];
    for (const text of texts) assert.equal(roundTrip(text), text);
    // Escapes are decoded (and re-encoded the JSON.stringify way); the number stays.
    assert.equal(roundTrip('["\\u0022 7.0 \\u005c",7.0]'), '["\\" 7.0 \\\\",7.0]');
    const v = parseFhirJson('["x\\"1.0\\"",2.50,"\\\\",0.0]') as unknown[];
    assert.equal(v[0], 'x"1.0"');
    assert.equal((v[1] as LosslessNumber).value, '2.50');
    assert.equal(v[2], '\\');
    assert.equal((v[3] as LosslessNumber).value, '0.0');
  });

  it('handles nested arrays and objects (the document-order walk)', () => {
    const text =
      '{"resourceType":"Observation","component":[{"valueQuantity":{"value":1.50,"unit":"mmol/L"}},' +
      '{"valueSampledData":{"origin":{"value":0.0},"period":1.0,"data":"1 2 3"},"x":[[1,[2.0,[3,-0.0]]],{"y":{"z":[4.10]}}]}],' +
      '"flag":true,"none":null,"count":7}';
    assert.equal(roundTrip(text), text);
    const expected = {
      resourceType: 'Observation',
      component: [
        { valueQuantity: { value: new FhirDecimal('1.50'), unit: 'mmol/L' } },
        {
          valueSampledData: { origin: { value: new FhirDecimal('0.0') }, period: new FhirDecimal('1.0'), data: '1 2 3' },
          x: [[1, [new FhirDecimal('2.0'), [3, new FhirDecimal('-0.0')]]], { y: { z: [new FhirDecimal('4.10')] } }],
        },
      ],
      flag: true,
      none: null,
      count: 7,
    };
    assert.ok(deepEqualFhir(parseFhirJson(text), expected));
  });

  it('is order-correct when keys start with a digit (lossless-json fallback path)', () => {
    // JS enumerates integer-like keys first, so "1" comes before "b" in the parsed object although
    // it follows it in the text; a purely order-based lexeme assignment would swap 2.50 and 1.0.
    const text = '{"b":2.50,"1":1.0,"c":[0.0,{"20":3.00,"10":4}]}';
    const v = parseFhirJson(text) as Record<string, unknown>;
    assert.equal((v.b as LosslessNumber).value, '2.50');
    assert.equal((v['1'] as LosslessNumber).value, '1.0');
    const c = v.c as [LosslessNumber, Record<string, unknown>];
    assert.equal(c[0].value, '0.0');
    assert.equal((c[1]['20'] as LosslessNumber).value, '3.00');
    assert.equal(c[1]['10'], 4);
    // Without decimals, digit keys need no fallback.
    assert.deepEqual(parseFhirJson('{"2":1,"1":2}'), { '1': 2, '2': 1 });
  });

  it('accepts one leading BOM', () => {
    assert.equal(roundTrip('\uFEFF{"a":1.50}'), '{"a":1.50}');
    assert.equal(roundTrip('\uFEFF 0.0 '), '0.0');
    assert.throws(() => parseFhirJson('\uFEFF\uFEFF{}'), FhirJsonSyntaxError);
  });

  it('keeps a "__proto__" member as data', () => {
    const v = parseFhirJson('{"__proto__":{"x":1.50}}') as Record<string, unknown>;
    assert.equal(Object.getPrototypeOf(v), Object.prototype);
    assert.equal(roundTrip('{"__proto__":{"x":1.50}}'), '{"__proto__":{"x":1.50}}');
  });
});

describe('parseFhirJson: syntax errors', () => {
  // Documents hold PHI: no part of the document may appear in the message.
  const phi = ['Alice', 'Secret', 'Bob', 'Hidden', '1980', 'NaN'];
  const cases: Array<[string, string, number]> = [
    ['truncated', '{"name":"Alice Secret","birthDate":"1980-01-01","value":1.5', 59],
    ['truncated inside a string', '{"name":"Alice Secr', 8],
    ['trailing comma in object', '{"name":"Alice Secret","birthDate":"1980",}', 42],
    ['trailing comma in array', '{"name":["Alice Secret","Bob Hidden",]}', 37],
    ['duplicate key (different values)', '{"name":"Alice Secret","name":"Bob Hidden"}', 23],
    ['duplicate key (equal values)', '{"name":"Alice Secret","name":"Alice Secret"}', 23],
    ['duplicate key (decimal values)', '{"v":1.50,"v":1.50,"name":"Bob Hidden"}', 10],
    ['duplicate key written with an escape', '{"name":"Alice Secret","n\\u0061me":"Bob Hidden"}', 23],
    ['duplicate key in a nested object', '[{"a":{"b":"Alice Secret","b":1}}]', 26],
    ['bare NaN', '{"name":"Alice Secret","value":NaN}', 31],
    ['bare word', '{"name":Alice}', 8],
    ['single quotes', "{'name':'Alice Secret'}", 1],
    ['leading zero', '{"name":"Bob Hidden","v":01}', 26],
    ['content after the value', '{"name":"Alice Secret"} Bob', 24],
    ['raw control character in a string', '{"name":"Alice\u0001Secret"}', 14],
    ['empty document', '   ', 3],
  ];

  for (const [name, text, position] of cases) {
    it(`rejects: ${name}`, () => {
      let caught: unknown;
      try {
        parseFhirJson(text);
      } catch (e) {
        caught = e;
      }
      assert.ok(caught instanceof FhirJsonSyntaxError, `expected FhirJsonSyntaxError, got ${String(caught)}`);
      assert.ok(caught instanceof SyntaxError);
      assert.equal(caught.position, position, caught.message);
      assert.match(caught.message, /at line \d+, column \d+ \(position \d+\)$/);
      for (const word of phi) assert.ok(!caught.message.includes(word), `message leaks "${word}": ${caught.message}`);
      assert.equal(caught.cause, undefined);
    });
  }

  it('reports line and column (1-based), counting a BOM', () => {
    const err = (text: string): FhirJsonSyntaxError => {
      try {
        parseFhirJson(text);
      } catch (e) {
        if (e instanceof FhirJsonSyntaxError) return e;
      }
      assert.fail('expected FhirJsonSyntaxError');
    };
    const e1 = err('{\n  "a": 1,\n  "b": }');
    assert.deepEqual([e1.line, e1.column, e1.position], [3, 8, 19]);
    assert.equal(e1.reason, 'unexpected character');
    const e2 = err('\uFEFF{"a":}');
    assert.deepEqual([e2.line, e2.column, e2.position], [1, 7, 6]);
    const e3 = err('\uFEFF{\n"a":1,\n"a":2}');
    assert.deepEqual([e3.line, e3.column, e3.position, e3.reason], [3, 1, 10, 'duplicate object key']);
  });

  it('rejects nesting deeper than 1000 levels', () => {
    assert.throws(() => parseFhirJson('['.repeat(1001) + ']'.repeat(1001)), FhirJsonSyntaxError);
    assert.doesNotThrow(() => parseFhirJson('['.repeat(999) + ']'.repeat(999)));
  });

  it('rejects non-strings', () => {
    assert.throws(() => parseFhirJson(Buffer.from('{}') as unknown as string), TypeError);
  });
});

describe('stringifyFhirJson', () => {
  it('indents like JSON.stringify when given a space', () => {
    const v = parseFhirJson('{"a":[1.50,{"b":0.0}],"c":"d"}');
    assert.equal(stringifyFhirJson(v, 2), '{\n  "a": [\n    1.50,\n    {\n      "b": 0.0\n    }\n  ],\n  "c": "d"\n}');
  });

  it('equals JSON.stringify for values without decimals', () => {
    const v = { resourceType: 'Patient', name: [{ given: ['A', 'B'] }], n: 1.5, t: true, z: null, u: undefined };
    assert.equal(stringifyFhirJson(v), JSON.stringify(v));
    assert.equal(stringifyFhirJson(v, 2), JSON.stringify(v, null, 2));
  });

  it('writes plain lossless-json LosslessNumbers verbatim too', () => {
    const v = { a: new LosslessNumber('1.50'), b: [new LosslessNumber('0.0'), new FhirDecimal('2.50')], c: 3 };
    assert.equal(stringifyFhirJson(v), '{"a":1.50,"b":[0.0,2.50],"c":3}');
    assert.equal(stringifyFhirJson(v, 1), '{\n "a": 1.50,\n "b": [\n  0.0,\n  2.50\n ],\n "c": 3\n}');
  });

  it('does not turn strings that look like sentinels into numbers', () => {
    const text = '{"a":"@fhirdecimal:00:1.5","b":1.50,"c":"isLosslessNumber","isLosslessNumber":"x"}';
    assert.equal(roundTrip(text), text);
  });

  it('refuses plain JSON.stringify of a FhirDecimal (it would lose the lexeme)', () => {
    assert.throws(() => JSON.stringify({ v: new FhirDecimal('1.50') }), TypeError);
  });

  it('rejects a LosslessNumber whose value was replaced by a non-number', () => {
    const d = new FhirDecimal('1.0');
    d.value = '1,0';
    assert.throws(() => stringifyFhirJson([d]), TypeError);
  });
});

describe('deepEqualFhir', () => {
  it('compares numbers by lexeme when a LosslessNumber is involved and ignores key order', () => {
    assert.ok(deepEqualFhir({ a: 1, b: [new FhirDecimal('1.50')] }, { b: [new LosslessNumber('1.50')], a: 1 }));
    assert.ok(!deepEqualFhir(new FhirDecimal('1.50'), new FhirDecimal('1.5')));
    assert.ok(!deepEqualFhir(new FhirDecimal('1.50'), 1.5));
    assert.ok(deepEqualFhir(new FhirDecimal('1.5'), 1.5));
    assert.ok(!deepEqualFhir({ a: 1 }, { a: 1, b: 2 }));
    assert.ok(deepEqualFhir({ a: 1, b: undefined }, { a: 1 }));
    assert.ok(!deepEqualFhir([1, 2], [2, 1]));
    assert.ok(!deepEqualFhir('1', 1));
  });
});

// ---------------------------------------------------------------------------------------------
// Synthea bundles
// ---------------------------------------------------------------------------------------------

const SYNTHEA_DIR = fileURLToPath(new URL('../../../shared/fhir-data/synthea/hiv-2021/', import.meta.url));
const syntheaFiles = existsSync(SYNTHEA_DIR) ? readdirSync(SYNTHEA_DIR).filter((f) => f.endsWith('.json')).sort() : [];

/**
 * The compact text a lossless parse→stringify must produce, derived from the original text without
 * parsing its numbers: drop whitespace outside strings, keep every other token verbatim, except that
 * each string token is rewritten the way JSON.stringify writes that string (the original may escape
 * differently, e.g. "\/" or "\u00e9"). Also returns the number lexemes a JS number would change.
 */
function expectedCompact(text: string): { compact: string; changed: string[] } {
  const token = /\s+|"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|[^\s"]/gy;
  let out = '';
  const changed: string[] = [];
  let consumed = 0;
  let m: RegExpExecArray | null;
  while ((m = token.exec(text)) !== null) {
    const t = m[0];
    consumed += t.length;
    const c = t.charCodeAt(0);
    if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) continue;
    if (c === 0x22) out += JSON.stringify(JSON.parse(t) as string);
    else {
      if ((c >= 0x30 && c <= 0x39) || c === 0x2d) {
        if (String(Number(t)) !== t) changed.push(t);
      }
      out += t;
    }
  }
  assert.equal(consumed, text.length, 'the tokenizer consumed the whole text');
  return { compact: out, changed };
}

function collectDecimals(v: unknown, out: string[]): string[] {
  if (isLosslessNumber(v)) out.push(v.value);
  else if (Array.isArray(v)) for (const x of v) collectDecimals(x, out);
  else if (v !== null && typeof v === 'object') for (const x of Object.values(v)) collectDecimals(x, out);
  return out;
}

function decimalsToNumbers(v: unknown): unknown {
  if (isLosslessNumber(v)) return Number(v.value);
  if (Array.isArray(v)) return v.map(decimalsToNumbers);
  if (v !== null && typeof v === 'object') {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, decimalsToNumbers(x)]));
  }
  return v;
}

describe('Synthea bundles round-trip', { skip: syntheaFiles.length === 0 ? `no data in ${SYNTHEA_DIR}` : false }, () => {
  for (const file of syntheaFiles) {
    it(`${file}: stringify(parse(text)) equals the text minus insignificant whitespace`, () => {
      const text = readFileSync(SYNTHEA_DIR + file, 'utf8');
      const { compact, changed } = expectedCompact(text);
      const parsed = parseFhirJson(text);
      assert.equal(stringifyFhirJson(parsed), compact);
      // Exactly the lexemes a JS number would change became decimals, in document order.
      assert.deepEqual(collectDecimals(parsed, []), changed);
      // And nothing else differs from what JSON.parse sees.
      assert.deepEqual(decimalsToNumbers(parsed), JSON.parse(text));
    });
  }

  it('the patient bundles exercise the decimal path (they hold lexemes like 0.0 and 29.0)', () => {
    const patient = syntheaFiles.find((f) => f.startsWith('Bob965'));
    if (patient === undefined) return;
    const text = readFileSync(SYNTHEA_DIR + patient, 'utf8');
    const decimals = collectDecimals(parseFhirJson(text), []);
    assert.ok(decimals.includes('0.0'));
    assert.ok(decimals.includes('29.0'));
  });
});
