/** `medblock consortium init`: a new consortium's CA, member certificates and keys, written to a fresh directory. */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { createConsortium } from '../identity/ca.ts';
import { writeConsortiumDir } from '../identity/consortium-dir.ts';

export interface ConsortiumInitOptions {
  /** Comma-separated member ids. */
  members: string;
  out: string;
  channel?: string;
  quorum?: number;
}

export async function runConsortiumInit(opts: ConsortiumInitOptions): Promise<void> {
  const out = resolve(opts.out);
  // Checked before key generation to fail fast; the non-recursive mkdir below is the real guard.
  if (existsSync(out)) throw new Error(`${out} already exists; refusing to overwrite it (choose a new --out directory)`);
  const consortium = await createConsortium({
    members: opts.members.split(',').map((id) => id.trim()),
    channel: opts.channel,
    quorum: opts.quorum,
  });
  writeConsortiumDir(out, consortium);
  process.stdout.write(
    `created consortium "${consortium.channel}" in ${out}: CA and ${consortium.members.length} members ` +
      `(${consortium.members.map((m) => m.id).join(', ')}), quorum ${consortium.quorum}\n` +
      `each member directory holds private keys: hand it to that member only, over a secure channel\n`,
  );
}
