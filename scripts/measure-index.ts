/**
 * Blind-index token cost on the Synthea bundles in ../shared/fhir-data/synthea: the keyed HMAC scheme
 * (src/vault/blind-index.ts) against the former AES(index key, truncated SHA-256) one, per resource, tokens
 * computed per commit batch (one bundle) as the vault does. Not a test: `npx tsx scripts/measure-index.ts`.
 */
import { createCipheriv, createHmac, hash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseFhirJson } from '../src/fhir/json.ts';
import { extractTerms } from '../src/fhir/search/terms.ts';
import { BlindIndex } from '../src/vault/blind-index.ts';

type Term = { type: string; param: string; value: string };
const root = join(import.meta.dirname, '..', '..', 'shared', 'fhir-data', 'synthea');
const batches: Term[][] = [];
let resources = 0;
for (const dir of readdirSync(root)) {
  for (const file of readdirSync(join(root, dir))) {
    if (!file.endsWith('.json')) continue;
    const bundle = parseFhirJson(readFileSync(join(root, dir, file), 'utf8')) as { entry?: Array<{ resource?: { resourceType: string } }> };
    const batch: Term[] = [];
    for (const e of bundle.entry ?? []) {
      if (!e.resource) continue;
      resources++;
      for (const t of extractTerms(e.resource.resourceType, e.resource)) batch.push({ type: e.resource.resourceType, ...t });
    }
    batches.push(batch);
  }
}
const key = randomBytes(32);

/** The former scheme: AES-256(key, SHA-256(type 0 param 0 value)[0..16]), one AES pass per batch. */
function aesTokens(terms: Term[]): string[] {
  const blocks = Buffer.allocUnsafe(terms.length * 16);
  const slots = new Map<string, number>();
  const slotOf = terms.map((t) => {
    const input = `${t.type}\0${t.param}\0${t.value}`;
    let slot = slots.get(input);
    if (slot === undefined) {
      slot = slots.size;
      slots.set(input, slot);
      (hash('sha256', input, 'buffer') as unknown as Buffer).copy(blocks, slot * 16, 0, 16);
    }
    return slot;
  });
  const out = createCipheriv('aes-256-ecb', key, null).setAutoPadding(false).update(blocks.subarray(0, slots.size * 16));
  return slotOf.map((s) => out.toString('base64url', s * 16, (s + 1) * 16));
}

/** HMAC through node's createHmac object per term (for comparison with the one-shot form the vault uses). */
function createHmacTokens(terms: Term[]): string[] {
  return terms.map((t) => createHmac('sha256', key).update(`${t.type}\0${t.param}\0${t.value}`).digest().toString('base64url', 0, 16));
}

function best(run: () => void): number {
  let ms = Infinity;
  for (let round = 0; round < 7; round++) {
    const start = performance.now();
    run();
    ms = Math.min(ms, performance.now() - start);
  }
  return (ms * 1000) / resources;
}

const terms = batches.reduce((n, b) => n + b.length, 0);
const index = new BlindIndex(key);
index.tokensOf(batches.flat()); // subkeys derived once per (type, param), as in a running gateway
const rows = [
  ['AES(key, SHA-256[0..16]) (format 1)', best(() => batches.forEach(aesTokens))],
  ['HMAC-SHA-256 per-(type,param) subkey (format 2)', best(() => batches.forEach((b) => index.tokensOf(b)))],
  ['createHmac per term (reference)', best(() => batches.forEach(createHmacTokens))],
] as const;
console.log(`${resources} resources, ${(terms / resources).toFixed(1)} terms/resource`);
for (const [name, us] of rows) console.log(`${name.padEnd(50)} ${us.toFixed(2)} µs/resource`);
