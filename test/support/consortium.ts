/** Consortium directories for tests, created once per process (RSA key generation takes ~0.5 s per key). */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createConsortium } from '../../src/identity/ca.ts';
import { writeConsortiumDir } from '../../src/identity/consortium-dir.ts';

const made = new Map<string, Promise<string>>();
let root: string | undefined;

/** A consortium directory with these members on this channel (default: a random one, so tests never share a Kafka topic). */
export function testConsortium(members: string[], channel?: string): Promise<string> {
  const key = `${members.join(',')}@${channel ?? ''}`;
  let dir = made.get(key);
  if (!dir) {
    if (!root) {
      const base = mkdtempSync(join(tmpdir(), 'medblock-consortia-'));
      root = base;
      // At process exit, not in an `after` hook: a hook registered from inside a suite's hook runs when that suite ends.
      process.once('exit', () => rmSync(base, { recursive: true, force: true }));
    }
    const out = join(root, `c${made.size}`);
    dir = createConsortium({ members, channel: channel ?? `test-${Math.random().toString(36).slice(2, 10)}` }).then((c) => {
      writeConsortiumDir(out, c);
      return out;
    });
    made.set(key, dir);
  }
  return dir;
}
