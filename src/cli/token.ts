import { loadDevIssuer, mintToken } from '../access/tokens.ts';
import type { GatewayConfig } from '../config.ts';

export async function runToken(
  config: GatewayConfig,
  opts: { sub: string; scope: string; patient?: string; expiresIn: string },
): Promise<void> {
  const issuer = await loadDevIssuer(config.dataDir);
  const jwt = await mintToken(issuer, { subject: opts.sub, scope: opts.scope, patient: opts.patient, expiresIn: opts.expiresIn });
  process.stdout.write(`${jwt}\n`);
}
